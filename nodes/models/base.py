"""The base class every backbone architecture follows (built-in and plugin ones alike)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..conditioning import Condition

PREDICTIONS = ("velocity", "epsilon", "x0", "v")


class Backbone(nn.Module):
    """A network f(x, t, cond) -> tensor shaped like x, in our time (t = 0 noise, t = 1 data).

    Class attribute `arch`: the registered architecture name. Instance attributes: `config`, the JSON
    constructor arguments (cls(**config) rebuilds it), and `prediction`, what it outputs (velocity,
    epsilon, x0 or v; core/model_field converts exactly). Class-conditional backbones set `num_classes`
    and `null_label` (= num_classes, CFG's unconditional label). Route attention through
    `nodes.api.Attention` so attention editing works on it.
    """

    arch: str = ""
    config: dict[str, Any]
    prediction: str = "velocity"

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        raise NotImplementedError


def execution_device(module: nn.Module) -> torch.device:
    """Where a module computes: its `execution_device` when its weights are offloaded (they then live on
    the CPU or the meta device between calls), else the device of its first parameter."""
    device = getattr(module, "execution_device", None)
    return torch.device(device) if device is not None else next(module.parameters()).device
