"""The CONDITIONING value: class labels or text tokens, batched so cond and null run in one pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from nodegraph import batch_tiles


@dataclass(frozen=True)
class Condition:
    """What a conditional network is conditioned on (the CONDITIONING socket); any field may be None.

    labels: (B,) long class ids; the model's null label id means "no label" (CFG's unconditional).
    tokens: (B, L, D) per-token text features; mask: (B, L) bool, True for real tokens.
    pooled: (B, D) one vector per prompt. prompts: the source texts, for display and editing.
    extras: further per-row tensors a model family needs, by name, each (B, ...): SDXL's "time_ids"
    (size and crop micro-conditioning), Flux's "guidance" (the distilled guidance scale).
    A batch of 1 broadcasts against any batch size (`expand`, `bind`); `cat` stacks conditions along
    the batch so cond and null run in one forward pass; `select` takes rows. Immutable: every method
    returns a new Condition.
    """

    labels: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    prompts: tuple[str, ...] | None = None
    extras: Mapping[str, torch.Tensor] | None = None

    _BATCHED = ("labels", "tokens", "mask", "pooled")

    @property
    def batch_size(self) -> int:
        for value in (self.labels, self.tokens, self.pooled, *(self.extras or {}).values()):
            if value is not None:
                return value.shape[0]
        return 1

    def _map(self, fn) -> dict[str, object]:
        """fn applied to every tensor (the batched fields and each extra), as `replace` keywords."""
        changed: dict[str, object] = {name: fn(getattr(self, name)) for name in self._BATCHED
                                      if getattr(self, name) is not None}
        if self.extras:
            changed["extras"] = {name: fn(value) for name, value in self.extras.items()}
        return changed

    def with_extra(self, name: str, value: torch.Tensor) -> Condition:
        """A copy with extras[name] = value (a (B, ...) tensor, or (1, ...) to broadcast)."""
        return replace(self, extras={**(self.extras or {}), name: value})

    def expand(self, batch: int) -> Condition:
        """Repeat a batch-1 condition to `batch` rows (a no-op when already that size). Inside a call that
        runs k list elements as one batch (`nodegraph.batch_tiles()` = k), a condition of each element's
        batch b is tiled k times to k b rows, row i of every element keeping its condition."""
        size = self.batch_size
        if size == batch:
            return self
        tiles = batch_tiles()
        if size != 1 and tiles > 1 and size * tiles == batch:
            return replace(self, **self._map(lambda v: v.repeat(tiles, *([1] * (v.dim() - 1)))),
                           prompts=self.prompts * tiles if self.prompts is not None else None)
        if size != 1:
            raise ValueError(f"condition has batch {size}, cannot broadcast to {batch}")
        expanded = self._map(lambda v: v.expand(batch, *v.shape[1:]))
        prompts = self.prompts * batch if self.prompts is not None else None
        return replace(self, **expanded, prompts=prompts)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Condition:
        """Moved to `device`; floating tensors also cast to `dtype` when given (labels, masks keep theirs)."""
        def move(value: torch.Tensor) -> torch.Tensor:
            cast = dtype if dtype is not None and value.is_floating_point() else None
            return value.to(device=device, dtype=cast)
        moved = self._map(move)
        extras = moved.pop("extras", {})
        if all(v is getattr(self, k) for k, v in moved.items()) and all(
                v is self.extras[k] for k, v in extras.items()):  # type: ignore[index]
            return self  # already there: every step of a sampler asks this
        return replace(self, **moved, **({"extras": extras} if extras else {}))

    def bind(self, x: torch.Tensor) -> Condition:
        """This condition broadcast to x's batch and moved to x's device (what a field passes its network)."""
        return self.expand(x.shape[0]).to(x.device)

    @staticmethod
    def cat(conditions: list[Condition]) -> Condition:
        """Stack conditions along the batch (cond and null in one forward pass).

        Token sequences of different lengths are right-padded with zeros and masked out.
        """
        first = conditions[0]
        merged: dict[str, object] = {}
        for name in Condition._BATCHED:
            values = [getattr(c, name) for c in conditions]
            if all(v is None for v in values):
                merged[name] = None
                continue
            if any(v is None for v in values):
                raise ValueError(f"cannot batch conditions where only some have {name}")
            if name in ("tokens", "mask"):
                longest = max(v.shape[1] for v in values)
                values = [_pad_tokens(v, longest) for v in values]
            merged[name] = torch.cat(values, dim=0)
        if merged["tokens"] is not None and merged["mask"] is None:
            merged["mask"] = None
        prompts = None
        if all(c.prompts is not None for c in conditions):
            prompts = tuple(p for c in conditions for p in c.prompts)  # type: ignore[union-attr]
        names = [set(c.extras or {}) for c in conditions]
        if any(n != names[0] for n in names):
            raise ValueError(f"cannot batch conditions with different extras: {[sorted(n) for n in names]}")
        extras = {name: torch.cat([c.extras[name] for c in conditions], dim=0)  # type: ignore[index]
                  for name in sorted(names[0])} or None
        return replace(first, **merged, prompts=prompts, extras=extras)

    def select(self, index: slice | torch.Tensor) -> Condition:
        return replace(self, **self._map(lambda v: v[index]),
                       prompts=None if self.prompts is None else
                       tuple(self.prompts[i] for i in range(len(self.prompts))[index]) if isinstance(index, slice)
                       else None)


def _pad_tokens(value: torch.Tensor, length: int) -> torch.Tensor:
    missing = length - value.shape[1]
    if missing == 0:
        return value
    pad_shape = (value.shape[0], missing, *value.shape[2:])
    return torch.cat([value, value.new_zeros(pad_shape)], dim=1)
