"""A backbone for (B, D) points: random Fourier features of x and gated residual blocks.

    phi(x) = [cos(2 pi x B), sin(2 pi x B)],  B ~ N(0, scale^2) of shape (D, F), fixed (a buffer)
    e      = emb(t) + emb(y)                  (sinusoidal time embedding; class y, null id = num_classes)
    h_0    = W_in [x, phi(x)]
    h_k+1  = h_k + W_2 (silu(W_1 h_k) * (1 + g_k(e)))      (the embedding gates each block)
    f      = W_out silu(h_K)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from nodes.api import Backbone, Condition, batch_times, class_labels, timestep_embedding

PREDICTIONS = ("velocity", "epsilon", "x0")


class GatedBlock(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.inner = nn.Linear(hidden, hidden)
        self.gate = nn.Linear(hidden, hidden)
        self.outer = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.outer(nn.functional.silu(self.inner(h)) * (1 + self.gate(emb)))


class FourierMLP(Backbone):
    """f(x, t, cond) -> tensor shaped like x, for x of shape (B, dim). See the module docstring."""

    arch = "fourier_mlp"

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2, frequencies: int = 16,
                 scale: float = 1.0, num_classes: int | None = None, prediction: str = "velocity",
                 time_dim: int = 32) -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.config: dict[str, Any] = dict(dim=dim, hidden=hidden, depth=depth, frequencies=frequencies,
                                           scale=scale, num_classes=num_classes, prediction=prediction,
                                           time_dim=time_dim)
        self.prediction = prediction
        self.num_classes = num_classes
        self.time_dim = time_dim
        self.register_buffer("freqs", torch.randn(dim, frequencies) * scale)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label_embed = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim + 2 * frequencies, hidden)
        self.blocks = nn.ModuleList(GatedBlock(hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: Condition | None = None) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"fourier_mlp takes (B, D) inputs, got shape {tuple(x.shape)}")
        emb = self.time_mlp(timestep_embedding(batch_times(t, x.shape[0], x.device), self.time_dim))
        if self.label_embed is not None:
            emb = emb + self.label_embed(class_labels(cond, x.shape[0], self.num_classes, x.device))
        angles = 2 * math.pi * x @ self.freqs
        h = self.inp(torch.cat([x, torch.cos(angles), torch.sin(angles)], dim=-1))
        for block in self.blocks:
            h = block(h, emb)
        return self.out(nn.functional.silu(h))
