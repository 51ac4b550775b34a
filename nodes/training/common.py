"""The one optimisation loop and the one set-up that every training node uses.

A trainer supplies only its loss: `make_loss(generator) -> loss_fn(model, step)`, which draws its
own batch from the seeded generator. `fit` owns the loop (AdamW, learning-rate schedule, gradient
clipping, EMA, progress with the loss, checkpoint cadence); `train_in_run` owns the set-up inside a
run (seeded generator, device, intermediate checkpoints in the output folder, the `TrainingInfo`
attached to the returned model).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
from torch import nn

from nodegraph import Context

from ..models.checkpoint import save_model
from ..models.training_info import TrainingInfo, with_training_info

LossFn = Callable[[nn.Module, int], torch.Tensor]
"""loss_fn(model, step) -> scalar loss for one batch (the function draws its own batch)."""
MakeLoss = Callable[[torch.Generator], LossFn]
"""make_loss(generator) -> the trainer's loss function drawing all its randomness from `generator`."""
FINAL_LOSS_WINDOW = 50
"""The reported final loss is the mean of the last this many steps (one step's loss is noisy)."""


@dataclass(frozen=True)
class Optimisation:
    """AdamW(lr, weight_decay) with `warmup` linear steps then cosine decay to `final_lr_fraction` * lr;
    gradients clipped to global norm `grad_clip` (0 = off); EMA decay min(ema_decay, (1 + s) / (10 + s))
    (ema_decay = 0: the returned weights are the trained weights themselves)."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    warmup: int = 50
    final_lr_fraction: float = 0.1

    @classmethod
    def for_node(cls, steps: int, lr: float, **settings: float) -> Optimisation:
        """Training nodes warm up for a tenth of the steps, at most 100."""
        return cls(steps=steps, lr=lr, warmup=min(100, steps // 10), **settings)

    def lr_factor(self, step: int) -> float:
        """warmup: (step + 1) / warmup; then f + (1 - f) (1 + cos(pi p)) / 2, p the fraction of the rest done."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return self.final_lr_fraction + (1 - self.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


class Fitted(NamedTuple):
    """What `fit` returns: the EMA model (eval mode, frozen) and the loss of every step."""

    model: nn.Module
    losses: list[float]

    def final_loss(self) -> float:
        """Mean loss of the last `FINAL_LOSS_WINDOW` steps."""
        tail = self.losses[-FINAL_LOSS_WINDOW:]
        return sum(tail) / len(tail)


def trainable_copy(model: nn.Module) -> nn.Module:
    """A deep copy in train mode with gradients on (node inputs are never mutated)."""
    clone = copy.deepcopy(model)
    return clone.train().requires_grad_(True)


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameters and float buffers."""
    ema_params = list(ema.parameters())
    torch._foreach_lerp_(ema_params, list(model.parameters()), 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


def fit(model: nn.Module, loss_fn: LossFn, opt: Optimisation, progress: Callable[..., None] | None = None,
        checkpoint: Callable[[int, nn.Module], None] | None = None, checkpoint_every: int = 0,
        device: torch.device | str | None = None) -> Fitted:
    """Train a trainable copy of `model` (on `device` if given; `model` itself is left untouched).

    `progress(step, total, loss=...)` is called after each step (it also checks for cancellation);
    `checkpoint(step, ema)` every `checkpoint_every` steps when that is > 0.
    """
    model = trainable_copy(model)
    if device is not None:
        model = model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, opt.lr_factor)
    losses: list[float] = []
    for step in range(opt.steps):
        loss = loss_fn(model, step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {float(loss)} at step {step}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if opt.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, opt.grad_clip)
        optimiser.step()
        schedule.step()
        ema_update(ema, model, min(opt.ema_decay, (1 + step) / (10 + step)))
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, opt.steps, loss=losses[-1])
        if checkpoint is not None and checkpoint_every > 0 and (step + 1) % checkpoint_every == 0:
            checkpoint(step + 1, ema)
    return Fitted(ema, losses)


def describe_dataset(dataset) -> dict[str, object]:  # noqa: ANN001
    """The dataset's own summary for checkpoint metadata, else its type name and size."""
    describe = getattr(dataset, "describe", None)
    if callable(describe):
        return describe()
    return {"name": type(dataset).__name__, "size": int(dataset.images.shape[0])}


def train_in_run(ctx: Context, model: nn.Module, make_loss: MakeLoss, opt: Optimisation, info: TrainingInfo,
                 checkpoint_every: int = 0, checkpoint_prefix: str = "model") -> Fitted:
    """The set-up of every training node: `fit` a copy of `model` on the run's device with the loss
    drawing from `ctx.generator(info.seed)`, the run's progress reporter (with the loss), and every
    `checkpoint_every` steps the EMA weights written to `<output>/<prefix>_step<N>.safetensors` with
    `info` (steps = N). The returned model carries `info` with the final loss."""
    def checkpoint(step: int, ema: nn.Module) -> None:
        save_model(ema, ctx.output_path(f"{checkpoint_prefix}_step{step}.safetensors"),
                   training=replace(info, steps=step))

    fitted = fit(model, make_loss(ctx.generator(info.seed)), opt, ctx.progress, checkpoint, checkpoint_every,
                 device=ctx.device)
    with_training_info(fitted.model, replace(info, final_loss=fitted.final_loss()))
    return fitted
