"""A small U-Net f(x, t, cond) for images: residual blocks, skips, attention at low resolution.

Conditioning: class labels (embedding with a null id = num_classes, added to the time embedding)
and/or text (per-token features through cross-attention with a token mask; a pooled vector
added to the time embedding). All attention goes through `nodes.models.attention.Attention`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nodes.conditioning import Condition

from ..broadcast import batch_times
from .attention import Attention, name_attention_modules
from .base import PREDICTIONS, Backbone
from .layers import TimeEmbedding, class_labels, group_norm, text_context


class ResBlock(nn.Module):
    """h = x + conv(act(norm(conv(act(norm(x))) + W emb))); the last conv starts at zero."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(torch.nn.functional.silu(self.norm1(x)))
        h = h + self.emb(torch.nn.functional.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(torch.nn.functional.silu(self.norm2(h))))
        return self.skip(x) + h


class SpatialTransformer(nn.Module):
    """Feature map as H*W tokens: self-attention, cross-attention to text (if any), feed-forward; residual."""

    def __init__(self, channels: int, heads: int, resolution: tuple[int, int], context_dim: int | None) -> None:
        super().__init__()
        self.norm = group_norm(channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm_self = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, heads, resolution=resolution)
        self.norm_cross = nn.LayerNorm(channels) if context_dim else None
        self.cross_attn = Attention(channels, heads, context_dim=context_dim, resolution=resolution) \
            if context_dim else None
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        tokens = tokens + self.self_attn(self.norm_self(tokens))
        if self.cross_attn is not None and context is not None:
            tokens = tokens + self.cross_attn(self.norm_cross(tokens), context, mask)
        tokens = tokens + self.ff(self.norm_ff(tokens))
        out = self.proj_out(tokens).transpose(1, 2).reshape(b, c, h, w)
        return x + out


class Stage(nn.Module):
    """A ResBlock optionally followed by a SpatialTransformer."""

    def __init__(self, res: ResBlock, attn: SpatialTransformer | None) -> None:
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None,
                mask: torch.Tensor | None) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context, mask)


class UNet(Backbone):
    """U-Net backbone. `config` holds every constructor argument; `prediction` says what it outputs.

    in_channels/out_channels: image channels; image_size: side length (multiple of 2^(levels-1));
    channels: base width, multiplied per level by channel_mults; num_res_blocks per level;
    attention_resolutions: feature-map sides that get a SpatialTransformer (the middle always has one);
    num_classes: class conditioning with null id = num_classes (None: no labels);
    context_dim: text token width for cross-attention (None: no text); pooled_dim: pooled text width.
    """

    arch = "unet"

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, image_size: int = 16,
                 channels: int = 32, channel_mults: tuple[int, ...] | list[int] = (1, 2, 2),
                 num_res_blocks: int = 1, attention_resolutions: tuple[int, ...] | list[int] = (8,),
                 heads: int = 4, num_classes: int | None = None, context_dim: int | None = None,
                 pooled_dim: int | None = None, dropout: float = 0.0, prediction: str = "velocity") -> None:
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        out_channels = out_channels or in_channels
        levels = len(channel_mults)
        if image_size % (2 ** (levels - 1)):
            raise ValueError(f"image_size {image_size} must be divisible by {2 ** (levels - 1)}")
        self.config: dict[str, Any] = dict(
            in_channels=in_channels, out_channels=out_channels, image_size=image_size, channels=channels,
            channel_mults=list(channel_mults), num_res_blocks=num_res_blocks,
            attention_resolutions=list(attention_resolutions), heads=heads, num_classes=num_classes,
            context_dim=context_dim, pooled_dim=pooled_dim, dropout=dropout, prediction=prediction)
        self.prediction = prediction
        self.num_classes = num_classes
        self.null_label = num_classes
        self.context_dim = context_dim
        emb_dim = 4 * channels
        self.time_embed = TimeEmbedding(channels, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.pooled_embed = nn.Sequential(nn.Linear(pooled_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)) \
            if pooled_dim else None

        def transformer(ch: int, size: int) -> SpatialTransformer | None:
            if size not in attention_resolutions:
                return None
            return SpatialTransformer(ch, heads, (size, size), context_dim)

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skip_channels = [channels]
        ch, size = channels, image_size
        for level, mult in enumerate(channel_mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(Stage(ResBlock(ch, channels * mult, emb_dim, dropout),
                                    transformer(channels * mult, size)))
                ch = channels * mult
                skip_channels.append(ch)
            self.down.append(blocks)
            if level < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skip_channels.append(ch)
                size //= 2
            else:
                self.downsample.append(nn.Identity())
        self.mid = nn.ModuleList([
            Stage(ResBlock(ch, ch, emb_dim, dropout), SpatialTransformer(ch, heads, (size, size), context_dim)),
            Stage(ResBlock(ch, ch, emb_dim, dropout), None)])
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(Stage(ResBlock(ch + skip_channels.pop(), channels * mult, emb_dim, dropout),
                                    transformer(channels * mult, size)))
                ch = channels * mult
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                   nn.Conv2d(ch, ch, 3, padding=1)))
                size *= 2
            else:
                self.upsample.append(nn.Identity())
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        name_attention_modules(self)

    def embed(self, t: torch.Tensor, cond: Condition | None, batch: int, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Time (+ label + pooled text) embedding, and the text context with its mask."""
        emb = self.time_embed(batch_times(t, batch, device))
        if self.label_embed is not None:
            emb = emb + self.label_embed(class_labels(cond, batch, self.null_label, device))
        tokens, mask, pooled = text_context(cond, batch, device) if self.context_dim or self.pooled_embed \
            else (None, None, None)
        if self.pooled_embed is not None and pooled is not None:
            emb = emb + self.pooled_embed(pooled)
        return emb, (tokens if self.context_dim else None), mask

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: Condition | None = None) -> torch.Tensor:
        emb, context, mask = self.embed(t, cond, x.shape[0], x.device)
        h = self.conv_in(x)
        skips = [h]
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for stage in blocks:
                h = stage(h, emb, context, mask)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        for stage in self.mid:
            h = stage(h, emb, context, mask)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            for stage in blocks:
                h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, mask)
            h = up(h)
        return self.conv_out(torch.nn.functional.silu(self.norm_out(h)))
