"""Guidance as field wrappers: classifier-free guidance (CFG) and classifier guidance.

CFG:        u~ = u(x|null) + w (u(x|c) - u(x|null)) = (1 - w) u(x|null) + w u(x|c);  w = 1: no guidance.
Classifier: u~ = u(x) + w b_t grad_x log p_t(y|x),   b_t = (alpha' beta^2 - beta' beta alpha) / alpha.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nodegraph import node

from .conditioning import Condition
from .fields import VectorField, bind
from .parameterization import guidance_coefficient
from .paths import expand_time
from .sockets import CLASSIFIER, CONDITIONING, VECTOR_FIELD


class CFGField(VectorField):
    """Classifier-free guidance around a conditional `field`.

    cond and null (or `negative`, which replaces null when given) run in ONE forward pass on the
    concatenated batch [x; x] with Condition.cat([cond, null]) unless `batched` is False.
    w = 1 evaluates only the conditional branch (one pass of batch B). Outside the guidance
    interval [t_lo, t_hi] the field is the plain conditional one. `rescale` = phi > 0 mixes in the
    guided output rescaled to the conditional output's per-sample std (guidance rescale):
    u = phi u~ std(u_c)/std(u~) + (1 - phi) u~.
    """

    def __init__(self, field: VectorField, cond: Condition, null: Condition, scale: float,
                 negative: Condition | None = None, rescale: float = 0.0,
                 interval: tuple[float, float] = (0.0, 1.0), batched: bool = True) -> None:
        self.field = field
        self.cond = cond
        self.uncond = negative if negative is not None else null
        self.scale = float(scale)
        self.rescale = float(rescale)
        self.interval = (float(interval[0]), float(interval[1]))
        self.batched = batched
        self.path = field.path
        self.clip = field.clip
        self._bound: dict[tuple[int, str], tuple[Condition, Condition, Condition]] = {}

    def conditions(self, x: torch.Tensor) -> tuple[Condition, Condition, Condition]:
        """(cond, null, cond ++ null) broadcast to x's batch and device; built once per batch size."""
        key = (x.shape[0], str(x.device))
        bound = self._bound.get(key)
        if bound is None:
            cond, uncond = bind(self.cond, x), bind(self.uncond, x)
            bound = self._bound[key] = (cond, uncond, Condition.cat([cond, uncond]))
        return bound

    def branches(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u(x|cond), u(x|null)): one pass over the doubled batch, or two passes when not batched."""
        cond, uncond, both = self.conditions(x)
        if not self.batched:
            return self.field(x, t, cond), self.field(x, t, uncond)
        out = self.field(torch.cat([x, x]), torch.cat([t, t]), both)
        return out[: x.shape[0]], out[x.shape[0]:]

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        if self.scale == 1.0:
            return self.field(x, t, self.conditions(x)[0])
        weight: torch.Tensor | float = self.scale
        lo, hi = self.interval
        if lo > 0.0 or hi < 1.0:
            active = (t >= lo) & (t <= hi)
            if not bool(active.any()):
                return self.field(x, t, self.conditions(x)[0])
            weight = expand_time(torch.where(active, self.scale, 1.0).to(x.dtype), x)
        u_cond, u_uncond = self.branches(x, t)
        guided = u_uncond + weight * (u_cond - u_uncond)
        if self.rescale > 0:
            dims = tuple(range(1, x.dim()))
            ratio = u_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp_min(1e-12)
            guided = self.rescale * guided * ratio + (1 - self.rescale) * guided
        return guided


class ClassifierGuidedField(VectorField):
    """u~ = u(x, t) + w b_t grad_x log p_t(y|x) with a noisy-time classifier `classifier(x, t) -> logits`.

    b_t = (alpha' beta^2 - beta' beta alpha) / alpha grows like 1/alpha as t -> 0. Near t = 0:
    clip_mode "clamp" uses max(alpha, alpha_min) in b_t; "skip" switches guidance off where alpha < alpha_min.
    """

    def __init__(self, field: VectorField, classifier: torch.nn.Module, label: int, scale: float,
                 alpha_min: float = 1e-2, clip_mode: str = "clamp") -> None:
        self.field = field
        self.classifier = classifier
        self.label = int(label)
        self.scale = float(scale)
        self.alpha_min = float(alpha_min)
        self.clip_mode = clip_mode
        self.path = field.require_path()
        self.clip = field.clip

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
        velocity = self.field(x, t, cond)
        if self.scale == 0.0:
            return velocity
        tt = expand_time(t, x)
        coefficient = guidance_coefficient(self.path, tt, self.alpha_min)
        if self.clip_mode == "skip":
            coefficient = torch.where(self.path.alpha(tt) >= self.alpha_min, coefficient, 0.0)
        return velocity + self.scale * coefficient * self.log_prob_grad(x, t)


@node("core/cfg", category="guidance", display_name="Classifier-free guidance")
def cfg(field: VECTOR_FIELD, cond: CONDITIONING, null: CONDITIONING,
        scale: Annotated[float, Field(ge=0, le=30)] = 4.0,
        negative: CONDITIONING = None,
        rescale: Annotated[float, Field(ge=0, le=1)] = 0.0,
        t_lo: Annotated[float, Field(ge=0, le=1)] = 0.0,
        t_hi: Annotated[float, Field(ge=0, le=1)] = 1.0,
        batched: bool = True) -> VECTOR_FIELD:
    """u~ = (1 - w) u(x|null) + w u(x|cond), cond and null in one batched forward pass (w = 1: one
    pass, no guidance). negative replaces null; rescale phi matches the conditional std; guidance
    only for t in [t_lo, t_hi]."""
    if t_lo > t_hi:
        raise ValueError(f"guidance interval is empty: t_lo={t_lo} > t_hi={t_hi}")
    return CFGField(field, cond, null, scale, negative, rescale, (t_lo, t_hi), batched)


@node("core/classifier_guidance", category="guidance", display_name="Classifier guidance")
def classifier_guidance(field: VECTOR_FIELD, classifier: CLASSIFIER, label: Annotated[int, Field(ge=0)] = 0,
                        scale: Annotated[float, Field(ge=0, le=100)] = 1.0,
                        alpha_min: Annotated[float, Field(gt=0, le=1)] = 1e-2,
                        clip_mode: Literal["clamp", "skip"] = "clamp") -> VECTOR_FIELD:
    """u~ = u + w b_t grad_x log p_t(y|x), b_t = (alpha' beta^2 - beta' beta alpha)/alpha; near t = 0
    b_t uses max(alpha, alpha_min) (clamp) or guidance is off while alpha < alpha_min (skip)."""
    return ClassifierGuidedField(field, classifier, label, scale, alpha_min, clip_mode)


@node("core/class_condition", category="guidance", display_name="Class label")
def class_condition(label: Annotated[int, Field(ge=0, le=100000)] = 0) -> CONDITIONING:
    """A class-label condition (batch 1, broadcast to any batch). The null label is label = num_classes."""
    return Condition(labels=torch.tensor([label], dtype=torch.long))
