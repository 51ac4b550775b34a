"""Pieces shared by the backbones: sinusoidal time embedding, group norm, batch-wise condition lookup."""

from __future__ import annotations

import math

import torch
from torch import nn

from nodes.conditioning import Condition


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """[cos(s t w_i), sin(s t w_i)] with w_i = max_period^(-i / (dim/2)); t in [0, 1] scaled by s = 1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides `channels`."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def class_labels(cond: Condition | None, batch: int, null_id: int, device: torch.device) -> torch.Tensor:
    """cond.labels broadcast to (batch,), or the null label everywhere when there is no label."""
    if cond is None or cond.labels is None:
        return torch.full((batch,), null_id, device=device, dtype=torch.long)
    labels = cond.labels.to(device=device, dtype=torch.long).reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch)
    if labels.shape[0] != batch:
        raise ValueError(f"condition has {labels.shape[0]} labels for a batch of {batch}")
    if bool(((labels < 0) | (labels > null_id)).any()):
        raise ValueError(f"class labels must lie in [0, {null_id}] (null label = {null_id})")
    return labels


def text_context(cond: Condition | None, batch: int, device: torch.device
                 ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(tokens (B, L, D), mask (B, L) bool, pooled (B, D)) broadcast to the batch; Nones when absent."""
    if cond is None:
        return None, None, None
    cond = cond.expand(batch) if cond.batch_size != batch else cond
    tokens = None if cond.tokens is None else cond.tokens.to(device=device, dtype=torch.float32)
    mask = None
    if tokens is not None and cond.mask is not None:
        mask = cond.mask.to(device=device, dtype=torch.bool)
    pooled = None if cond.pooled is None else cond.pooled.to(device=device, dtype=torch.float32)
    return tokens, mask, pooled


class TimeEmbedding(nn.Module):
    """t -> MLP(sinusoidal(t)): a (B, dim) vector that conditions every block."""

    def __init__(self, base_dim: int, dim: int) -> None:
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.base_dim))
