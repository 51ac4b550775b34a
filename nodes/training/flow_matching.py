"""Conditional flow matching on a Gaussian path, with label dropout for classifier-free guidance.

For data z, noise eps ~ N(0, I) and t ~ U(0, 1): x_t = alpha_t z + beta_t eps and the network is
regressed onto the target of its prediction type: velocity alpha'_t z + beta'_t eps, epsilon eps,
or x0 z. With probability eta a label is replaced by the null id, so one network learns both
u(x|y) and u(x|null).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nodegraph import Context, OutputPath, node

from ..annotations import (
    BatchSize,
    CheckpointEvery,
    Dropout,
    EmaDecay,
    GradClip,
    LearningRate,
    Seed,
    TrainingSteps,
    WeightDecay,
)
from ..conditioning import Condition
from ..models.training_info import TrainingInfo
from ..sockets import BACKBONE, DATASET, PATH
from .common import Optimisation, describe_dataset, train_in_run

ConditionFn = Callable[[torch.Tensor, torch.Tensor], Condition | None]
"""condition_fn(indices (B,), dropped (B,) bool) -> the Condition for that batch (text models plug in here)."""


def regression_target(prediction: str, path, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """What a network of this prediction type should output at x_t."""
    if prediction == "velocity":
        return path.target_velocity(z, eps, t)
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return z
    raise ValueError(f"unknown prediction type {prediction!r}")


def label_condition(labels: torch.Tensor | None, null_id: int | None) -> ConditionFn:
    """Class labels with dropped rows set to the null id; None when the model or data has no labels."""
    def make(indices: torch.Tensor, dropped: torch.Tensor) -> Condition | None:
        if labels is None or null_id is None:
            return None
        return Condition(labels=torch.where(dropped, torch.full_like(indices, null_id), labels[indices]))
    return make


def flow_matching_loss_fn(path, images: torch.Tensor, condition_fn: ConditionFn, batch_size: int,  # noqa: ANN001
                          label_dropout: float, generator: torch.Generator) -> Callable[[nn.Module, int], torch.Tensor]:
    """loss(model) = mean || f(x_t, t, c) - target ||^2 over a batch drawn with `generator`."""
    def loss(model: nn.Module, step: int) -> torch.Tensor:
        device = images.device
        indices = torch.randint(0, images.shape[0], (batch_size,), generator=generator, device=device)
        z = images[indices]
        eps = torch.randn(z.shape, generator=generator, device=device)
        t = torch.rand(batch_size, generator=generator, device=device)
        dropped = torch.rand(batch_size, generator=generator, device=device) < label_dropout
        x_t = path.sample(z, eps, t)
        target = regression_target(model.prediction, path, z, eps, t)
        return (model(x_t, t, condition_fn(indices, dropped)) - target).pow(2).mean()
    return loss


@node("core/train_flow_matching", category="training", display_name="Train flow matching")
def train_flow_matching(ctx: Context, backbone: BACKBONE, dataset: DATASET, path: PATH,
                        steps: TrainingSteps = 2000,
                        batch_size: BatchSize = 64,
                        lr: LearningRate = 2e-3,
                        label_dropout: Dropout = 0.1,
                        ema_decay: EmaDecay = 0.999,
                        grad_clip: GradClip = 1.0,
                        weight_decay: WeightDecay = 0.0,
                        seed: Seed = 0,
                        checkpoint_every: CheckpointEvery = 0,
                        checkpoint_prefix: OutputPath = "flow_matching") -> BACKBONE:
    """Conditional flow matching: minimise ||f(x_t, t, y) - target||^2 with x_t = alpha_t z + beta_t eps,
    target alpha'_t z + beta'_t eps (velocity), eps or z, labels dropped to the null id with probability
    label_dropout (for CFG). AdamW + cosine lr, gradient clipping, returns the EMA weights.
    checkpoint_every > 0 also writes <prefix>_step<N>.safetensors into the output folder."""
    images = dataset.images.to(ctx.device)
    labels = getattr(dataset, "labels", None)
    labels = None if labels is None else labels.to(ctx.device)
    condition_fn = label_condition(labels, getattr(backbone, "null_label", None))
    info = TrainingInfo("flow_matching", describe_dataset(dataset), steps, batch_size, lr, seed, path.config(),
                        settings={"label_dropout": label_dropout, "ema_decay": ema_decay})
    opt = Optimisation.for_node(steps, lr, weight_decay=weight_decay, grad_clip=grad_clip, ema_decay=ema_decay)
    return train_in_run(ctx, backbone,
                        lambda gen: flow_matching_loss_fn(path, images, condition_fn, batch_size, label_dropout, gen),
                        opt, info, checkpoint_every, checkpoint_prefix).model
