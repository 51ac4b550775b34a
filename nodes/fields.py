"""VECTOR_FIELD objects: callables `field(x, t, cond=None) -> velocity` composed from plain torch code.

A field knows its Gaussian path (when it has one) so solvers and guidance can turn its velocity into
a score, x0 or epsilon prediction exactly (see `nodes.parameterization`). Wrappers (conditioning,
CFG, classifier guidance) take a field and return a new one; nothing runs until a solver calls it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nodegraph import node

from .conditioning import Condition
from .parameterization import DEFAULT_CLIP, PREDICTIONS, convert, from_x0_eps, to_x0_eps
from .paths import GaussianPath
from .sockets import BACKBONE, CONDITIONING, PATH, VECTOR_FIELD


class VectorField:
    """Base class. Subclasses implement `__call__` (the velocity); `predict` converts through the path."""

    path: GaussianPath | None = None
    clip: float = DEFAULT_CLIP

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        raise NotImplementedError

    def require_path(self) -> GaussianPath:
        if self.path is None:
            raise ValueError(f"{type(self).__name__} has no probability path; score / x0 need one")
        return self.path

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) predictions with x = alpha x0 + beta eps, from one evaluation."""
        return to_x0_eps(self(x, t, cond), "velocity", x, t, self.require_path(), self.clip)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None,
                kind: str = "velocity") -> torch.Tensor:
        """The field's prediction of `kind` (velocity, epsilon, x0, score) at (x, t): one evaluation."""
        if kind == "velocity":
            return self(x, t, cond)
        return from_x0_eps(*self.x0_eps(x, t, cond), kind, x, t, self.require_path(), self.clip)

    def score(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        """grad_x log p_t(x) implied by the field (exact for a Gaussian path, beta clamped at `clip`)."""
        return self.predict(x, t, cond, "score")


class ModelField(VectorField):
    """A backbone f(x, t, cond) read as a `prediction` on `path`, exposed as a velocity.

    Velocity backbones are returned as is (no extra arithmetic); epsilon / x0 backbones are converted
    exactly with the path's alpha, beta (divisors clamped at `clip`, see nodes.parameterization).
    """

    def __init__(self, backbone: torch.nn.Module, path: GaussianPath, prediction: str = "velocity",
                 clip: float = DEFAULT_CLIP) -> None:
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.backbone = backbone
        self.path = path
        self.prediction = prediction
        self.clip = clip

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        out = self.backbone(x, t, cond)
        if self.prediction == "velocity":
            return out
        return convert(out, self.prediction, "velocity", x, t, self.path, self.clip)

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return to_x0_eps(self.backbone(x, t, cond), self.prediction, x, t, self.path, self.clip)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None,
                kind: str = "velocity") -> torch.Tensor:
        return convert(self.backbone(x, t, cond), self.prediction, kind, x, t, self.path, self.clip)


class BoundField(VectorField):
    """`field` with its condition fixed to `cond` (any condition passed at call time is ignored)."""

    def __init__(self, field: VectorField, cond: Condition | None) -> None:
        self.field = field
        self.cond = cond
        self.path = field.path
        self.clip = field.clip

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.field(x, t, bind(self.cond, x))

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.field.x0_eps(x, t, bind(self.cond, x))

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None,
                kind: str = "velocity") -> torch.Tensor:
        return self.field.predict(x, t, bind(self.cond, x), kind)


def bind(cond: Condition | None, x: torch.Tensor) -> Condition | None:
    """The condition broadcast to x's batch and moved to x's device."""
    if cond is None:
        return None
    return cond.expand(x.shape[0]).to(x.device)


@node("core/model_field", category="fields", display_name="Model → vector field")
def model_field(backbone: BACKBONE, path: PATH,
                prediction: Literal["auto", "velocity", "epsilon", "x0", "score"] = "auto",
                clip: Annotated[float, Field(gt=0, le=0.1)] = DEFAULT_CLIP) -> VECTOR_FIELD:
    """Read a backbone's output as a velocity on `path`. auto: the backbone's own `prediction`.
    Conversions: u = alpha' x0 + beta' eps with x = alpha x0 + beta eps, score = -eps/beta;
    divisions by alpha (t -> 0) or beta (t -> 1) use max(., clip)."""
    kind = getattr(backbone, "prediction", "velocity") if prediction == "auto" else prediction
    return ModelField(backbone, path, kind, clip)


@node("core/condition_field", category="fields", display_name="Condition field")
def condition_field(field: VECTOR_FIELD, conditioning: CONDITIONING) -> VECTOR_FIELD:
    """Bind a condition to a field without guidance: u(x, t | c), one forward pass per evaluation."""
    return BoundField(field, conditioning)
