"""Training a VAE on a dataset's images: reconstruction + kl_weight * KL, then the latent scaling factor."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, OutputPath, node

from ..annotations import BatchSize, LearningRate, Seed, TrainingSteps
from ..models.builders import seeded
from ..models.checkpoint import save_model
from ..models.training_info import TrainingInfo
from ..models.vae import AutoencoderKL, kl_divergence
from ..sockets import DATASET, VAE
from .common import LossFn, Optimisation, describe_dataset, train_in_run


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of posterior samples z = mu + sigma eps over `images` (pixels in [-1, 1])."""
    gen = torch.Generator(device=images.device).manual_seed(0)
    samples = []
    for i in range(0, images.shape[0], batch_size):
        mu, logvar = vae.encode(images[i:i + batch_size])
        eps = torch.randn(mu.shape, generator=gen, device=mu.device)
        samples.append(mu + torch.exp(0.5 * logvar) * eps)
    return float(1.0 / torch.cat(samples).std().clamp_min(1e-8))


def vae_loss_fn(images: torch.Tensor, batch_size: int, kl_weight: float, generator: torch.Generator) -> LossFn:
    """loss(vae) = mean (decode(mu + sigma eps) - x)^2 + kl_weight * mean KL, on a batch drawn uniformly
    with replacement from `images` ((N, C, H, W) in [-1, 1]); indices and eps come from `generator`."""
    def loss(model: AutoencoderKL, step: int) -> torch.Tensor:
        indices = torch.randint(images.shape[0], (min(batch_size, images.shape[0]),), generator=generator,
                                device=generator.device)
        x = images[indices.to(images.device)]
        recon, mu, logvar = model(x, generator=generator)
        return (recon - x).pow(2).mean() + kl_weight * kl_divergence(mu, logvar)
    return loss


def vae_optimisation(steps: int, lr: float) -> Optimisation:
    """No warm-up, no gradient clipping, no EMA: cosine decay of the plain AdamW weights to 10 % of lr."""
    return Optimisation(steps=steps, lr=lr, grad_clip=0.0, ema_decay=0.0, warmup=0)


@node("core/train_vae", category="training", display_name="Train VAE")
def train_vae(ctx: Context, dataset: DATASET, steps: TrainingSteps = 2000,
              batch_size: BatchSize = 64,
              lr: LearningRate = 2e-3,
              kl_weight: Annotated[float, Field(ge=0, le=10)] = 1e-4,
              latent_channels: Annotated[int, Field(ge=1, le=64)] = 4,
              channels: list[Annotated[int, Field(ge=4, le=1024)]] = [32, 64],  # noqa: B006
              seed: Seed = 0) -> VAE:
    """Train a KL-regularised autoencoder on the dataset's images (in [-1, 1]):
    loss = mean (decode(mu + sigma eps) - x)^2 + kl_weight * mean KL(N(mu, sigma^2) || N(0, 1)).
    Each level of `channels` halves the side. Afterwards scaling_factor = 1 / std(latents)."""
    images = dataset.images.to(ctx.device)
    vae = seeded(lambda: AutoencoderKL(images.shape[1], latent_channels, channels), seed, ctx.device)
    info = TrainingInfo("vae", describe_dataset(dataset), steps, batch_size, lr, seed,
                        settings={"kl_weight": kl_weight})
    trained = train_in_run(ctx, vae, lambda gen: vae_loss_fn(images, batch_size, kl_weight, gen),
                           vae_optimisation(steps, lr), info).model
    trained.scaling_factor = latent_scaling_factor(trained, images[:4096])
    return trained


@node("core/save_vae", category="training", display_name="Save VAE", outputs=("path",), side_effect=True)
def save_vae_node(ctx: Context, vae: VAE, filename: OutputPath = "vae.safetensors") -> str:
    """Write the VAE as a model checkpoint (weights; config with the scaling factor, training facts as
    JSON metadata), atomically, under the output folder."""
    if not filename.endswith(".safetensors"):
        raise ValueError(f"filename {filename!r} must end in .safetensors")
    return str(save_model(vae, ctx.output_path(filename)))
