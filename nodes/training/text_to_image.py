"""Text-conditional flow matching on VAE latents, with a frozen text encoder and caption dropout.

Everything that does not change during training is computed once: the VAE latents of every
image (scaled by the VAE's scaling factor) and the text features of every distinct caption (and
of the empty prompt, the null condition). A step then costs one backbone forward and backward,
run by the shared flow matching loop (`nodes.training.flow_matching`): x_t = alpha_t z + beta_t eps,
loss ||f(x_t, t, c) - target||^2, where c is the caption's condition, replaced by the null
condition with probability `caption_dropout` (so the same network gives u(x|null) for CFG).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nodegraph import Context, OutputPath, node

from ..annotations import BatchSize, CheckpointEvery, Dropout, EmaDecay, GradClip, LearningRate, Seed, TrainingSteps
from ..conditioning import Condition
from ..models.training_info import TrainingInfo
from ..sockets import BACKBONE, DATASET, PATH, TEXT_ENCODER, VAE
from .common import LossFn, Optimisation, train_in_run
from .flow_matching import ConditionFn, flow_matching_loss_fn


@dataclass(frozen=True)
class CaptionTable:
    """Text features of each distinct caption, padded to one length; row `null_index` is the empty prompt.

    `index[i]` is the row of example i's caption.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    index: torch.Tensor
    null_index: int

    def to(self, device: torch.device | str) -> CaptionTable:
        return CaptionTable(self.tokens.to(device), self.mask.to(device), self.pooled.to(device),
                            self.index.to(device), self.null_index)

    def condition_fn(self) -> ConditionFn:
        """condition(indices, dropped): the examples' caption features, the null row where dropped."""
        def make(indices: torch.Tensor, dropped: torch.Tensor) -> Condition:
            rows = torch.where(dropped, torch.full_like(indices, self.null_index), self.index[indices])
            return Condition(tokens=self.tokens[rows], mask=self.mask[rows], pooled=self.pooled[rows])
        return make


def caption_table(encoder, captions: Sequence[str], chunk: int = 256) -> CaptionTable:  # noqa: ANN001
    """Encode each distinct caption once (plus ""), all padded to the longest tokenised caption."""
    distinct = sorted(set(captions) | {""})
    rows = {text: i for i, text in enumerate(distinct)}
    length = int(max(len(ids) for ids in encoder.tokenizer(distinct)["input_ids"]))
    parts = [encoder.encode(distinct[i:i + chunk], length=length) for i in range(0, len(distinct), chunk)]
    index = torch.tensor([rows[text] for text in captions], dtype=torch.long)
    return CaptionTable(torch.cat([p.tokens for p in parts]), torch.cat([p.mask for p in parts]),
                        torch.cat([p.pooled for p in parts]), index, rows[""])


@torch.no_grad()
def encode_dataset(vae, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:  # noqa: ANN001
    """Scaled VAE latents of images in [-1, 1] (the VAE takes [0, 1] images)."""
    device = next(vae.parameters()).device
    return torch.cat([vae.images_to_latents(((images[i:i + batch_size] + 1) / 2).to(device))
                      for i in range(0, images.shape[0], batch_size)])


@node("core/train_text_to_image", category="training", display_name="Train text-to-image (latent)")
def train_text_to_image(ctx: Context, backbone: BACKBONE, dataset: DATASET, vae: VAE, text_encoder: TEXT_ENCODER,
                        path: PATH, steps: TrainingSteps = 3000,
                        batch_size: BatchSize = 64,
                        lr: LearningRate = 1e-3,
                        caption_dropout: Dropout = 0.1,
                        ema_decay: EmaDecay = 0.999,
                        grad_clip: GradClip = 1.0,
                        seed: Seed = 0,
                        checkpoint_every: CheckpointEvery = 0,
                        checkpoint_prefix: OutputPath = "text_to_image") -> BACKBONE:
    """Flow matching on scaled VAE latents with text conditioning (a backbone with context_dim = the
    encoder's width): loss = ||f(alpha_t z + beta_t eps, t, c) - target||^2, t ~ U(0, 1), c = the caption's
    tokens / mask / pooled vector, replaced by the empty prompt's with probability caption_dropout.
    Latents and the features of each distinct caption are computed once. Returns the EMA weights;
    checkpoint_every > 0 also writes <prefix>_step<N>.safetensors (EMA) into the output folder."""
    if not getattr(dataset, "captions", None):
        raise ValueError("the dataset has no captions")
    context_dim = getattr(backbone, "config", {}).get("context_dim")
    if context_dim != text_encoder.dim:
        raise ValueError(f"backbone context_dim {context_dim} does not match the text encoder width {text_encoder.dim}")
    latents = encode_dataset(vae, dataset.images).to(ctx.device)
    table = caption_table(text_encoder, dataset.captions).to(ctx.device)
    info = TrainingInfo("flow_matching", dataset.describe(), steps, batch_size, lr, seed, path.config(),
                        settings={"caption_dropout": caption_dropout, "ema_decay": ema_decay,
                                  "latent_shape": list(latents.shape[1:]), "vae_scaling_factor": vae.scaling_factor,
                                  "text_encoder": text_encoder.name})
    opt = Optimisation.for_node(steps, lr, grad_clip=grad_clip, ema_decay=ema_decay)
    condition_fn = table.condition_fn()
    def make_loss(gen: torch.Generator) -> LossFn:
        return flow_matching_loss_fn(path, latents, condition_fn, batch_size, caption_dropout, gen)

    return train_in_run(ctx, backbone, make_loss, opt, info, checkpoint_every, checkpoint_prefix).model
