"""A small diffusion transformer (DiT): patchify, transformer blocks with adaLN-Zero, unpatchify.

Conditioning vector c = emb(t) + emb(label) + W pooled modulates every block
(shift, scale, gate from c; the gates start at zero so each block starts as the identity).
Text tokens enter through cross-attention. All attention goes through `Attention`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nodes.conditioning import Condition

from ..broadcast import batch_times
from .attention import Attention, name_attention_modules
from .base import PREDICTIONS, Backbone
from .layers import TimeEmbedding, class_labels, text_context


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (1 + scale) + shift, with per-sample (B, D) shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """x += g1 * SelfAttn(mod(LN x)); x += CrossAttn(LN x, text); x += g2 * FF(mod(LN x))."""

    def __init__(self, dim: int, heads: int, resolution: tuple[int, int], context_dim: int | None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads, resolution=resolution)
        self.norm_cross = nn.LayerNorm(dim) if context_dim else None
        self.cross_attn = Attention(dim, heads, context_dim=context_dim, resolution=resolution) if context_dim else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(nn.functional.silu(c)).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        if self.cross_attn is not None and context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, mask)
        return x + gate2[:, None] * self.ff(modulate(self.norm2(x), shift2, scale2))


class DiT(Backbone):
    """Diffusion transformer over (image_size / patch_size)^2 patch tokens of width `dim`."""

    arch = "dit"

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, image_size: int = 16,
                 patch_size: int = 2, dim: int = 96, depth: int = 4, heads: int = 4,
                 num_classes: int | None = None, context_dim: int | None = None, pooled_dim: int | None = None,
                 prediction: str = "velocity") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        out_channels = out_channels or in_channels
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, image_size=image_size, patch_size=patch_size,
            dim=dim, depth=depth, heads=heads, num_classes=num_classes, context_dim=context_dim,
            pooled_dim=pooled_dim, prediction=prediction)
        self.prediction = prediction
        self.num_classes = num_classes
        self.null_label = num_classes
        self.context_dim = context_dim
        self.patch_size = patch_size
        self.out_channels = out_channels
        self.grid = image_size // patch_size
        self.patchify = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, dim) * 0.02)
        self.time_embed = TimeEmbedding(dim, dim)
        self.label_embed = nn.Embedding(num_classes + 1, dim) if num_classes else None
        self.pooled_embed = nn.Linear(pooled_dim, dim) if pooled_dim else None
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, (self.grid, self.grid), context_dim) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False)
        self.ada_out = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(dim, patch_size * patch_size * out_channels)
        for layer in (self.ada_out, self.head):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        name_attention_modules(self)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: Condition | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self.time_embed(batch_times(t, b, x.device))
        if self.label_embed is not None:
            c = c + self.label_embed(class_labels(cond, b, self.null_label, x.device))
        tokens, mask, pooled = text_context(cond, b, x.device)
        if self.pooled_embed is not None and pooled is not None:
            c = c + self.pooled_embed(pooled)
        context = tokens if self.context_dim else None
        z = self.patchify(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            z = block(z, c, context, mask)
        shift, scale = self.ada_out(nn.functional.silu(c)).chunk(2, dim=-1)
        z = self.head(modulate(self.norm_out(z), shift, scale))
        p, g = self.patch_size, self.grid
        z = z.view(b, g, g, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return z.reshape(b, self.out_channels, h, w)
