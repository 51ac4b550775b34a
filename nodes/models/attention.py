"""One attention interface for every backbone: projections here, the weighting in a swappable processor.

An `Attention` module computes q, k, v of shape (B, heads, L, d) and hands them to
`self.processor(attn, q, k, v, mask, is_cross)`, which returns the mixed values (B, heads, Lq, d).
The default processor is `F.scaled_dot_product_attention`; a controller (prompt-to-prompt) is a
processor that reads or replaces the probabilities softmax(q k^T / sqrt(d)), so editing attention
needs no change to the model. Each module carries a stable `name` (its path in the model),
`is_cross` and the spatial `resolution` (H, W) of the feature map its queries come from.

Models whose attention is not built from `Attention` (diffusers U-Nets) join through adapters: any
submodule with an `attention_sites()` method contributes its sites to `attention_modules`, each with a
`name`, `is_cross` and a `processor` to read and set (see nodes/families/attention.py). Processors
only ever see an `AttentionLayer`: name, heads, is_cross, resolution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class AttentionLayer(Protocol):
    """What a processor may read about the layer it computes: `name` (its path in the model), `heads`,
    `is_cross`, and `resolution` (H, W) of the feature map its queries come from (None if not a map)."""

    name: str
    heads: int
    is_cross: bool
    resolution: tuple[int, int] | None


class AttentionProcessor(Protocol):
    """Computes attention from projected q, k, v (B, heads, L, d); mask (B, Lk) bool (True = attend) or None."""

    def __call__(self, attn: AttentionLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None, is_cross: bool) -> torch.Tensor: ...


class AttentionSite(Protocol):
    """Where a processor is installed: an `Attention` module, or an adapter over a foreign model's layer.
    Setting `processor` to DEFAULT_PROCESSOR gives the layer back its own fastest path."""

    name: str
    is_cross: bool
    processor: AttentionProcessor


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with masked keys removed: (B, heads, Lq, Lk). For processors that edit maps."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1)


class DefaultProcessor:
    """softmax(q k^T / sqrt(d)) v through torch's fused `scaled_dot_product_attention`."""

    def __call__(self, attn: AttentionLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None, is_cross: bool) -> torch.Tensor:
        attn_mask = None if mask is None else mask[:, None, None, :]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)

    def __repr__(self) -> str:
        return "DefaultProcessor()"


DEFAULT_PROCESSOR = DefaultProcessor()


class Attention(nn.Module):
    """Multi-head attention over (B, L, dim) queries and (B, Lk, context_dim) keys (self-attention if None).

    `mask` (B, Lk) bool marks real keys. A row whose mask is all False attends to nothing and
    outputs zero (the processor sees that row fully unmasked so softmax stays finite).
    """

    def __init__(self, dim: int, heads: int = 4, context_dim: int | None = None,
                 resolution: tuple[int, int] | None = None) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.is_cross = context_dim is not None
        self.resolution = resolution
        self.name = ""  # set by `name_attention_modules` to the module's path in its model
        kv_dim = context_dim if context_dim is not None else dim
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.processor: AttentionProcessor = DEFAULT_PROCESSOR

    def __setattr__(self, key: str, value: object) -> None:
        if key == "processor":  # a processor is never a submodule: not in state_dict, never moved
            object.__setattr__(self, key, value)
            return
        super().__setattr__(key, value)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        source = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(source)), self._split(self.to_v(source))
        empty_rows = None
        if mask is not None:
            mask = mask.to(device=x.device, dtype=torch.bool)
            has_key = mask.any(dim=-1)
            if not bool(has_key.all()):
                empty_rows = ~has_key
                mask = mask | empty_rows[:, None]
        out = self.processor(self, q, k, v, mask, self.is_cross)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        out = self.to_out(out)
        if empty_rows is not None:
            out = out.masked_fill(empty_rows[:, None, None], 0.0)
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, heads={self.heads}, is_cross={self.is_cross}, resolution={self.resolution}"


def name_attention_modules(model: nn.Module) -> None:
    """Give every `Attention` in `model` its dotted path as a stable `name` (call at the end of __init__)."""
    for path, module in model.named_modules():
        if isinstance(module, Attention):
            module.name = path


def attention_modules(model: nn.Module) -> dict[str, AttentionSite]:
    """The model's attention sites by name, in module order: its `Attention` modules and the sites of every
    submodule that offers `attention_sites()` (an adapter of a foreign model; it answers for its subtree)."""
    sites: dict[str, AttentionSite] = {}
    pending = [model]
    while pending:
        module = pending.pop()
        if isinstance(module, Attention):
            sites[module.name] = module
            continue
        offered = getattr(module, "attention_sites", None)
        if callable(offered):
            sites.update(offered())
            continue
        pending.extend(reversed(list(module.children())))
    return sites


ProcessorSpec = AttentionProcessor | dict[str, AttentionProcessor] | None


def set_attention_processor(model: nn.Module, processor: ProcessorSpec,
                            where: Callable[[AttentionSite], bool] | None = None) -> dict[str, AttentionProcessor]:
    """Install `processor` at every attention site (or those `where(site)` selects; a dict maps names).

    None restores the default. Returns the previous processors by name, so a caller can put them back.
    A site that refuses the processor (an adapter that cannot stand in for a layer) raises, and the
    sites changed before it are put back first, so the model is never left half swapped.
    """
    sites = attention_modules(model)
    previous: dict[str, AttentionProcessor] = {}
    try:
        for name, site in sites.items():
            previous[name] = site.processor
            if isinstance(processor, dict):
                if name in processor:
                    site.processor = processor[name]
                continue
            if where is not None and not where(site):
                continue
            site.processor = DEFAULT_PROCESSOR if processor is None else processor
    except Exception:
        for name, kept in previous.items():
            sites[name].processor = kept
        raise
    return previous


@contextlib.contextmanager
def attention_processor(model: nn.Module, processor: AttentionProcessor,
                        where: Callable[[AttentionSite], bool] | None = None) -> Iterator[nn.Module]:
    """Use `processor` inside a `with` block and restore the previous processors afterwards.

    Models are cached values shared between nodes, so a node should swap processors only this way.
    """
    previous = set_attention_processor(model, processor, where)
    try:
        yield model
    finally:
        set_attention_processor(model, previous)
