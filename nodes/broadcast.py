"""The two ways a time t meets a batch, written once: as a (B,) vector, and as (B, 1, ..., 1)."""

from __future__ import annotations

import torch


def batch_times(t: torch.Tensor | float, batch: int, device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """t as a (batch,) tensor: a scalar or a 1-element tensor is broadcast, a (batch,) one kept."""
    t = torch.as_tensor(t, device=device, dtype=dtype)
    if t.dim() == 0 or t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t has shape {tuple(t.shape)}, expected ({batch},)")
    return t


def expand_time(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """t of shape (B,) (or a scalar) as (B, 1, ..., 1), in like's dtype and device, so it broadcasts
    against `like` (B, ...): alpha_t * x per sample."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.dim() == 0:
        return t
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)))
