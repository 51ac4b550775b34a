"""diffusers U-Net attention behind our attention-processor interface (prompt-to-prompt on SD 1.x/2.x, SDXL).

diffusers' `Attention` modules also hand their work to a swappable processor, called as
processor(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, ...). Each such layer of
a U-Net is offered to `nodes.models.attention.attention_modules` as a `DiffusersAttentionSite` (name =
its path in the U-Net, is_cross, a `processor` to read and set), so `attention_processor` and every
controller work on it unchanged:

- setting one of our processors installs a `BridgeProcessor` in the diffusers module. It projects q, k, v
  exactly as diffusers' AttnProcessor2_0 does, splits the heads to (B, heads, L, d), calls our processor
  and finishes as diffusers does (output projection, dropout, residual, rescale). attn1 is self-attention,
  attn2 cross-attention whose key axis is the token axis of the Condition (CLIP's 77 positions);
- setting DEFAULT_PROCESSOR puts the module's own processor back, so an unedited run is diffusers' own
  code path and kernels;
- resolution: a U-Net's transformer blocks see (B, h w, C) without the grid. `LatentGrid` holds the
  latent (H, W) of the current forward pass (UNetBackbone sets it); the number of queries picks the level,
  h_k = ceil(h_{k-1} / 2) (stride-2 convolutions with padding 1) with h_k w_k = queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..models.attention import DEFAULT_PROCESSOR, AttentionProcessor

PLAIN_PROCESSORS = frozenset({"AttnProcessor", "AttnProcessor2_0", "XFormersAttnProcessor", "SlicedAttnProcessor",
                              "AttnProcessorNPU"})
"""diffusers processors computing plain softmax(q k^T / sqrt(d)) v from to_q, to_k, to_v: the bridge
reproduces them, so it may take their place."""


class LatentGrid:
    """The latent size (H, W) of the forward pass in progress, and the feature-map size of each U-Net level."""

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None

    def resolution(self, queries: int) -> tuple[int, int] | None:
        """(h, w) of the level with h w = queries, halving (rounding up) from the latent size; None if none."""
        if self.size is None:
            return None
        height, width = self.size
        while height * width > queries and (height > 1 or width > 1):
            height, width = -(-height // 2), -(-width // 2)
        return (height, width) if height * width == queries else None


@dataclass(frozen=True)
class LayerCall:
    """The `AttentionLayer` our processor sees for one call of a diffusers layer."""

    name: str
    heads: int
    is_cross: bool
    resolution: tuple[int, int] | None


class BridgeProcessor:
    """A diffusers attention processor that computes the weighting with one of ours (see the module doc).

    `native` is the processor it replaced, put back when the site's processor is reset."""

    def __init__(self, processor: AttentionProcessor, name: str, native: object, grid: LatentGrid) -> None:
        self.processor = processor
        self.name = name
        self.native = native
        self.grid = grid

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError(f"attention layer {self.name!r}: attention masks are not supported by our processors "
                             "in diffusers models")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.shape if hidden_states.ndim == 4 else None
        if spatial is not None:
            batch, channels, height, width = spatial
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch, queries, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = k.shape[-1] // attn.heads
        q, k, v = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (q, k, v))
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        resolution = (height, width) if spatial is not None else self.grid.resolution(queries)
        layer = LayerCall(self.name, attn.heads, is_cross, resolution)
        out = self.processor(layer, q, k, v, None, is_cross)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial is not None:
            out = out.transpose(-1, -2).reshape(spatial)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def __repr__(self) -> str:
        return f"BridgeProcessor({self.processor!r})"


class DiffusersAttentionSite:
    """One diffusers `Attention` module as one of our attention sites (see the module doc)."""

    def __init__(self, module: nn.Module, name: str, grid: LatentGrid) -> None:
        self.module = module
        self.name = name
        self.is_cross = bool(module.is_cross_attention)
        self.heads = int(module.heads)
        self.grid = grid

    @property
    def processor(self) -> AttentionProcessor:
        current = self.module.processor
        return current.processor if isinstance(current, BridgeProcessor) else DEFAULT_PROCESSOR

    @processor.setter
    def processor(self, processor: AttentionProcessor) -> None:
        current = self.module.processor
        native = current.native if isinstance(current, BridgeProcessor) else current
        if processor is DEFAULT_PROCESSOR:
            self.module.set_processor(native)
            return
        if type(native).__name__ not in PLAIN_PROCESSORS:
            raise ValueError(f"attention layer {self.name!r} runs {type(native).__name__}, which our attention "
                             f"processors cannot stand in for (they reproduce {sorted(PLAIN_PROCESSORS)})")
        self.module.set_processor(BridgeProcessor(processor, self.name, native, self.grid))

    def __repr__(self) -> str:
        return f"DiffusersAttentionSite({self.name!r}, is_cross={self.is_cross}, heads={self.heads})"


def diffusers_attention_sites(model: nn.Module, grid: LatentGrid) -> dict[str, DiffusersAttentionSite]:
    """Every diffusers `Attention` module of `model` (a U-Net: attn1 and attn2 of each transformer block) by path."""
    from diffusers.models.attention_processor import Attention

    return {name: DiffusersAttentionSite(module, name, grid) for name, module in model.named_modules()
            if isinstance(module, Attention)}
