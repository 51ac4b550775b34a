"""An MLP backbone f(x, t, cond) for low-dimensional (B, D) toy data (2-D mixtures, moons)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nodes.conditioning import Condition

from ..broadcast import batch_times
from .base import PREDICTIONS, Backbone
from .layers import TimeEmbedding, class_labels


class MLPBackbone(Backbone):
    """h_0 = W [x, emb(t) + emb(y)]; `depth` residual SiLU layers of width `hidden`; linear head to D.

    num_classes: class conditioning with null id = num_classes (None: unconditional).
    """

    arch = "mlp"

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32,
                 num_classes: int | None = None, prediction: str = "velocity") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.config: dict[str, Any] = dict(dim=dim, hidden=hidden, depth=depth, time_dim=time_dim,
                                           num_classes=num_classes, prediction=prediction)
        self.prediction = prediction
        self.num_classes = num_classes
        self.null_label = num_classes
        self.time_embed = TimeEmbedding(time_dim, hidden)
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim + hidden, hidden)
        self.layers = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: Condition | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"the MLP backbone takes (B, D) inputs, got shape {tuple(x.shape)}")
        emb = self.time_embed(batch_times(t, x.shape[0], x.device))
        if self.label_embed is not None:
            emb = emb + self.label_embed(class_labels(cond, x.shape[0], self.null_label, x.device))
        h = self.inp(torch.cat([x, emb], dim=-1))
        for layer in self.layers:
            h = h + layer(h)
        return self.out(h)
