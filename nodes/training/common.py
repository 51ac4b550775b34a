"""The shared optimisation loop: AdamW, gradient clipping, an EMA copy, progress per step."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

LossFn = Callable[[nn.Module, int], torch.Tensor]
"""loss_fn(model, step) -> scalar loss for one batch (the function draws its own batch)."""


@dataclass(frozen=True)
class Optimisation:
    """AdamW(lr, weight_decay) with `warmup` linear steps then cosine decay to `final_lr_fraction` * lr;
    gradients clipped to global norm `grad_clip` (0 = off); EMA decay min(ema_decay, (1 + s) / (10 + s))."""

    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    warmup: int = 50
    final_lr_fraction: float = 0.1

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.steps - self.warmup, 1)
        return self.final_lr_fraction + (1 - self.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


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


def fit(model: nn.Module, loss_fn: LossFn, opt: Optimisation,
        progress: Callable[..., None] | None = None,
        checkpoint: Callable[[int, nn.Module], None] | None = None, checkpoint_every: int = 0
        ) -> tuple[nn.Module, list[float]]:
    """Train `model` in place; return the EMA copy (eval mode, frozen) and the loss of every step.

    `progress(step, total, loss=...)` is called after each step (it also checks for cancellation);
    `checkpoint(step, ema)` every `checkpoint_every` steps when that is > 0.
    """
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
    return ema, losses
