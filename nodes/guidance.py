"""Guidance as field wrappers, built from two shared blocks that core CFG, prompt-to-prompt and
plugins all use:

    ConditionPair.evaluate(field, x, t) -> (u(x|cond), u(x|null))   one forward pass over [x; x]
    cfg_combine(u_cond, u_null, w)      -> u_null + w (u_cond - u_null) = (1 - w) u_null + w u_cond

A guidance *method* (the GUIDANCE socket) is a rule combine(u_cond, u_null, w, x, t, path) -> u;
"cfg" is the built-in one and plugins register theirs as ("guidance", name) components, which
core/cfg then offers. w = 1 means no guidance for every method (one pass of the conditional branch).
Classifier guidance: u~ = u(x) + w b_t grad_x log p_t(y|x),  b_t = (alpha' beta^2 - beta' beta alpha) / alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from nodegraph import batch_tiles

from .broadcast import expand_time
from .conditioning import Condition
from .fields import FieldWrapper, VectorField
from .parameterization import guidance_coefficient
from .paths import GaussianPath


def cfg_combine(u_cond: torch.Tensor, u_null: torch.Tensor, scale: torch.Tensor | float,
                x: torch.Tensor | None = None, t: torch.Tensor | None = None,
                path: GaussianPath | None = None) -> torch.Tensor:
    """Classifier-free guidance: u_null + w (u_cond - u_null)."""
    return u_null + scale * (u_cond - u_null)


class CombineFn(Protocol):
    def __call__(self, u_cond: torch.Tensor, u_null: torch.Tensor, scale: torch.Tensor | float,
                 x: torch.Tensor, t: torch.Tensor, path: GaussianPath | None, **options: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class GuidanceMethod:
    """A named combine rule with its options bound: the GUIDANCE socket's value."""

    name: str
    combine: CombineFn
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_path: bool = False

    def __call__(self, u_cond: torch.Tensor, u_null: torch.Tensor, scale: torch.Tensor | float,
                 x: torch.Tensor, t: torch.Tensor, path: GaussianPath | None) -> torch.Tensor:
        return self.combine(u_cond, u_null, scale, x, t, path, **self.options)

    def configured(self, **options: Any) -> GuidanceMethod:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"guidance {self.name!r} has no option(s) {unknown}; its options are "
                             f"{sorted(self.options)}")
        return replace(self, options={**self.options, **options})


CFG = GuidanceMethod("cfg", cfg_combine)
BUILTIN_GUIDANCE: tuple[GuidanceMethod, ...] = (CFG,)
"""Registered as ("guidance", name) components by the built-in library."""


class ConditionPair:
    """A condition and its null (or negative) counterpart, evaluated together.

    The concatenated condition is built once per batch size and device (at most a few entries)."""

    def __init__(self, cond: Condition, null: Condition) -> None:
        self.cond, self.null = cond, null
        self._bound: dict[tuple[int, str, int], tuple[Condition, Condition, Condition]] = {}

    def bound(self, x: torch.Tensor) -> tuple[Condition, Condition, Condition]:
        """(cond, null, cond ++ null) broadcast to x's batch and device."""
        key = (x.shape[0], str(x.device), batch_tiles())
        found = self._bound.get(key)
        if found is None:
            if len(self._bound) >= 8:
                self._bound.clear()
            cond, null = self.cond.bind(x), self.null.bind(x)
            found = self._bound[key] = (cond, null, Condition.cat([cond, null]))
        return found

    def evaluate(self, field: VectorField, x: torch.Tensor, t: torch.Tensor, batched: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(u(x|cond), u(x|null)): one pass over the doubled batch [x; x], or two passes if not batched."""
        cond, null, both = self.bound(x)
        if not batched:
            return field(x, t, cond), field(x, t, null)
        out = field(torch.cat([x, x]), torch.cat([t, t]), both)
        return out[: x.shape[0]], out[x.shape[0]:]


class CFGField(FieldWrapper):
    """Guidance around a conditional `inner` field with a combine `method` (default CFG).

    cond and null (or `negative`, which replaces null when given) run in ONE forward pass unless
    `batched` is False. w = 1 evaluates only the conditional branch (one pass of batch B). Outside the
    guidance interval [t_lo, t_hi] the field is the plain conditional one. `rescale` = phi > 0 mixes in
    the guided output rescaled to the conditional output's per-sample std (guidance rescale):
    u = phi u~ std(u_c)/std(u~) + (1 - phi) u~.
    """

    def __init__(self, inner: VectorField, cond: Condition, null: Condition, scale: float,
                 negative: Condition | None = None, rescale: float = 0.0,
                 interval: tuple[float, float] = (0.0, 1.0), batched: bool = True,
                 method: GuidanceMethod = CFG) -> None:
        super().__init__(inner)
        self.pair = ConditionPair(cond, negative if negative is not None else null)
        self.scale = float(scale)
        self.rescale = float(rescale)
        self.interval = (float(interval[0]), float(interval[1]))
        self.batched = batched
        self.method = method
        if method.needs_path:
            inner.require_path()

    def _conditional(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner(x, t, self.pair.bound(x)[0])

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        if self.scale == 1.0:
            return self._conditional(x, t)
        weight: torch.Tensor | float = self.scale
        lo, hi = self.interval
        if lo > 0.0 or hi < 1.0:
            active = (t >= lo) & (t <= hi)
            if not bool(active.any()):
                return self._conditional(x, t)
            weight = expand_time(torch.where(active, self.scale, 1.0).to(x.dtype), x)
        u_cond, u_null = self.pair.evaluate(self.inner, x, t, self.batched)
        guided = self.method(u_cond, u_null, weight, x, t, self.path)
        if self.rescale > 0:
            dims = tuple(range(1, x.dim()))
            ratio = u_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
            guided = self.rescale * guided * ratio + (1 - self.rescale) * guided
        return guided


class ClassifierGuidedField(FieldWrapper):
    """u~ = u(x, t) + w b_t grad_x log p_t(y|x) with a noisy-time classifier `classifier(x, t) -> logits`.

    b_t = (alpha' beta^2 - beta' beta alpha) / alpha grows like 1/alpha as t -> 0. Near t = 0:
    clip_mode "clamp" uses max(alpha, alpha_min) in b_t; "skip" switches guidance off where alpha < alpha_min.
    """

    def __init__(self, inner: VectorField, classifier: torch.nn.Module, label: int, scale: float,
                 alpha_min: float = 1e-2, clip_mode: str = "clamp") -> None:
        super().__init__(inner)
        self.classifier = classifier
        self.label = int(label)
        self.scale = float(scale)
        self.alpha_min = float(alpha_min)
        self.clip_mode = clip_mode
        self.path = inner.require_path()

    def log_prob_grad(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """grad_x log p_t(y|x) for every sample, by autograd through the classifier."""
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            logits = self.classifier(x_in, t)
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            chosen = torch.log_softmax(logits, dim=-1)[:, self.label].sum()
            (grad,) = torch.autograd.grad(chosen, x_in)
        return grad.to(x.dtype)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        velocity = self.inner(x, t, cond)
        if self.scale == 0.0:
            return velocity
        tt = expand_time(t, x)
        coefficient = guidance_coefficient(self.path, tt, self.alpha_min)
        if self.clip_mode == "skip":
            coefficient = torch.where(self.path.alpha(tt) >= self.alpha_min, coefficient, 0.0)
        return velocity + self.scale * coefficient * self.log_prob_grad(x, t)
