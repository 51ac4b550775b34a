"""Guidance as field wrappers, built from two shared blocks that core CFG, prompt-to-prompt and
plugins all use:

    ConditionPair.evaluate(field, x, t) -> (u(x|cond), u(x|null))   one forward pass over [x; x]
    cfg_combine(u_cond, u_null, w)      -> u_null + w (u_cond - u_null) = (1 - w) u_null + w u_cond

A guidance *method* (the GUIDANCE socket) is a rule combine(u_cond, u_null, w, x, t, path) -> u;
"cfg" is the built-in one and plugins register theirs as ("guidance", name) components, which
core/cfg then offers. w = 1 means no guidance for every method (one pass of the conditional branch).
An `affine` method (CFG) mixes u_cond and u_null with weights that sum to 1 and do not depend on them,
so it commutes with the exact conversions between velocity, epsilon, x0 and v (affine in the prediction at
fixed x, t): the guidance field combines the network's own prediction (epsilon for SD) and converts once,
instead of converting both branches to velocity and, for DDIM, back again.
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
from .parameterization import convert, guidance_coefficient, to_x0_eps
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
    """A named combine rule with its options bound: the GUIDANCE socket's value.

    `affine`: combine(u_cond, u_null, w) = a u_cond + (1 - a) u_null with `a` independent of the predictions,
    x and the path (true for CFG), so it may be applied to any prediction kind (see the module docstring)."""

    name: str
    combine: CombineFn
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_path: bool = False
    affine: bool = False

    def __call__(self, u_cond: torch.Tensor, u_null: torch.Tensor, scale: torch.Tensor | float,
                 x: torch.Tensor, t: torch.Tensor, path: GaussianPath | None) -> torch.Tensor:
        return self.combine(u_cond, u_null, scale, x, t, path, **self.options)

    def configured(self, **options: Any) -> GuidanceMethod:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"guidance {self.name!r} has no option(s) {unknown}; its options are "
                             f"{sorted(self.options)}")
        return replace(self, options={**self.options, **options})


CFG = GuidanceMethod("cfg", cfg_combine, affine=True)
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

    def evaluate(self, field: VectorField, x: torch.Tensor, t: torch.Tensor, batched: bool = True,
                 kind: str = "velocity") -> tuple[torch.Tensor, torch.Tensor]:
        """(u(x|cond), u(x|null)): one pass over the doubled batch [x; x], or two passes if not batched;
        the field's velocity, or its prediction of another `kind` (`field.predict`)."""
        cond, null, both = self.bound(x)

        def run(x_: torch.Tensor, t_: torch.Tensor, c: Condition) -> torch.Tensor:
            return field(x_, t_, c) if kind == "velocity" else field.predict(x_, t_, c, kind)

        if not batched:
            return run(x, t, cond), run(x, t, null)
        out = run(torch.cat([x, x]), torch.cat([t, t]), both)
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

    def _weight(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor | float | None:
        """The guidance weight at t (per sample inside / outside the interval); None: no guidance at all."""
        if self.scale == 1.0:
            return None
        lo, hi = self.interval
        if lo > 0.0 or hi < 1.0:
            active = (t >= lo) & (t <= hi)
            if not bool(active.any()):
                return None
            return expand_time(torch.where(active, self.scale, 1.0).to(x.dtype), x)
        return self.scale

    def _native(self) -> str | None:
        """The prediction kind to guide in: the inner field's own, when the method allows it (affine, no
        rescale, which needs the velocity's std); None: guide the velocity."""
        return self.inner.prediction if self.method.affine and self.rescale == 0 else None

    def _guided(self, x: torch.Tensor, t: torch.Tensor, weight: torch.Tensor | float, kind: str) -> torch.Tensor:
        u_cond, u_null = self.pair.evaluate(self.inner, x, t, self.batched, kind)
        return self.method(u_cond, u_null, weight, x, t, self.path)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        weight = self._weight(x, t)
        if weight is None:
            return self.inner(x, t, self.pair.bound(x)[0])
        kind = self._native()
        if kind is not None:
            return convert(self._guided(x, t, weight, kind), kind, "velocity", x, t, self.path, self.clip)
        u_cond, u_null = self.pair.evaluate(self.inner, x, t, self.batched)
        guided = self.method(u_cond, u_null, weight, x, t, self.path)
        if self.rescale > 0:
            dims = tuple(range(1, x.dim()))
            ratio = u_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
            guided = self.rescale * guided * ratio + (1 - self.rescale) * guided
        return guided

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) of the guided field: converted once from the guided native prediction when the method
        allows it (what DDIM asks for every step), else from the guided velocity."""
        weight = self._weight(x, t)
        if weight is None:
            return self.inner.x0_eps(x, t, self.pair.bound(x)[0])
        kind = self._native()
        if kind is None:
            return super().x0_eps(x, t, cond)
        return to_x0_eps(self._guided(x, t, weight, kind), kind, x, t, self.require_path(), self.clip)


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
