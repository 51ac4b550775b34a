"""Attention controllers: processors that edit the target half of a source/target batch.

The conditional rows of a forward pass are laid out [source x n, target x n, (null rows ...)].
Within its window the controller replaces the target's attention probabilities:

* cross-attention (window per target token, t < window): A_tgt <- A_src @ M for word swap,
  A_tgt <- alpha * (A_src @ M) + (1 - alpha) * A_tgt for refine, then times a per-token weight
  for reweight;
* self-attention (t < self window) at layers with at most `self_max_tokens` queries: A_tgt <- A_src.

t runs from 0 (noise) to 1 (data), so "the first 80% of the steps" is t < 0.8 on a uniform grid.
Null (unconditional) rows are never edited.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nodes.models.attention import DEFAULT_PROCESSOR, AttentionLayer, attention_probs


@dataclass
class EditPlan:
    """What to do with the target's attention; all token tensors are over the padded length L."""

    mapping: torch.Tensor            # (L, L): source column -> target column
    alpha: torch.Tensor              # (L,): share of the mapped source map a target token takes
    cross_windows: torch.Tensor      # (L,): replace target token's map while t < window
    self_window: float = 0.0
    self_max_tokens: int = 64
    weights: torch.Tensor | None = None  # (L,): reweight factors for target tokens

    def to(self, device: torch.device, dtype: torch.dtype) -> EditPlan:
        move = lambda v: None if v is None else v.to(device=device, dtype=dtype)  # noqa: E731
        return EditPlan(move(self.mapping), move(self.alpha), self.cross_windows.to(device), self.self_window,
                        self.self_max_tokens, move(self.weights))


class EditController:
    """An attention processor for one forward pass at time `t` over `pairs` source/target pairs.

    With `store_rows` > 0 it keeps each cross-attention layer's head-averaged maps of the first
    `store_rows` rows, `maps[i] = (resolution, (store_rows, Lq, Lk))`, for local blend and for
    attention-map views.
    """

    def __init__(self, plan: EditPlan | None, pairs: int, t: float, store_rows: int = 0) -> None:
        self.plan = plan
        self.pairs = pairs
        self.t = t
        self.store_rows = store_rows
        self._plans: dict[tuple[torch.device, torch.dtype], EditPlan] = {}
        self.maps: list[tuple[tuple[int, int] | None, torch.Tensor]] = []

    def _edits_cross(self) -> bool:
        return self.plan is not None and bool((self.t < self.plan.cross_windows).any())

    def _edits_self(self, attn: AttentionLayer) -> bool:
        if self.plan is None or self.t >= self.plan.self_window or attn.resolution is None:
            return False
        height, width = attn.resolution
        return height * width <= self.plan.self_max_tokens

    def __call__(self, attn: AttentionLayer, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 mask: torch.Tensor | None, is_cross: bool) -> torch.Tensor:
        edit = self._edits_cross() if is_cross else self._edits_self(attn)
        keep = self.store_rows > 0 and is_cross
        if not edit and not keep:
            return DEFAULT_PROCESSOR(attn, q, k, v, mask, is_cross)
        probs = attention_probs(q, k, mask)
        n = self.pairs
        if edit:
            source, target = probs[:n], probs[n:2 * n]
            edited = self._cross(source, target) if is_cross else source
            probs = torch.cat([source, edited, probs[2 * n:]])
        if keep:
            self.maps.append((attn.resolution, probs[:self.store_rows].mean(dim=1)))
        return probs @ v

    def _cross(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        where = (source.device, source.dtype)
        plan = self._plans.get(where)
        if plan is None:  # moved once per forward pass, not once per attention layer
            plan = self._plans[where] = self.plan.to(*where)  # type: ignore[union-attr]
        mapped = source @ plan.mapping
        mapped = plan.alpha * mapped + (1 - plan.alpha) * target
        if plan.weights is not None:
            mapped = mapped * plan.weights
        active = self.t < plan.cross_windows
        return torch.where(active, mapped, target)


def blend_mask(maps: list[tuple[tuple[int, int] | None, torch.Tensor]], pairs: int, source_positions: list[int],
               target_positions: list[int], size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Local-blend mask (pairs, 1, H, W): where the chosen words attend, in source or target.

    Per layer the maps of the words' tokens are summed, brought to the sample's size and averaged
    over layers; the union of source and target is dilated (3x3 max pool), divided by its maximum
    and thresholded.
    """
    total = None
    for resolution, probs in maps:
        if resolution is None:
            continue
        height, width = resolution
        src = probs[:pairs, :, source_positions].sum(-1).view(pairs, 1, height, width)
        tgt = probs[pairs:2 * pairs, :, target_positions].sum(-1).view(pairs, 1, height, width)
        both = torch.maximum(src, tgt)
        both = F.interpolate(both, size=size, mode="bilinear", align_corners=False)
        total = both if total is None else total + both
    if total is None:
        raise ValueError("local blend needs cross-attention maps, and the backbone produced none")
    total = F.max_pool2d(total, kernel_size=3, stride=1, padding=1)
    total = total / total.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)
    return (total > threshold).to(total.dtype)
