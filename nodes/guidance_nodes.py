"""Guidance nodes: classifier-free guidance with any registered method, classifier guidance, labels."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nodegraph import Choice, node

from .annotations import GuidanceScale, Unit
from .conditioning import Condition
from .guidance import CFGField, ClassifierGuidedField
from .sockets import CLASSIFIER, CONDITIONING, GUIDANCE, VECTOR_FIELD


@node("core/cfg", category="guidance", display_name="Classifier-free guidance")
def cfg(field: VECTOR_FIELD, cond: CONDITIONING, null: CONDITIONING, scale: GuidanceScale = 4.0,
        negative: CONDITIONING = None, rescale: Unit = 0.0, t_lo: Unit = 0.0, t_hi: Unit = 1.0,
        batched: bool = True, method: Annotated[GUIDANCE, Choice("guidance")] = "cfg") -> VECTOR_FIELD:
    """u~ = (1 - w) u(x|null) + w u(x|cond) (method cfg; plugins add methods), cond and null in one
    batched forward pass (w = 1: one pass, no guidance). negative replaces null; rescale phi matches
    the conditional std; guidance only for t in [t_lo, t_hi]."""
    if t_lo > t_hi:
        raise ValueError(f"guidance interval is empty: t_lo={t_lo} > t_hi={t_hi}")
    return CFGField(field, cond, null, scale, negative, rescale, (t_lo, t_hi), batched, method)


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
