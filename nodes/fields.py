"""VECTOR_FIELD objects: the contract every guidance, solver and editing node relies on.

A vector field is a `VectorField` instance called as `field(x, t, cond=None) -> u`:
    x     (B, ...) the current samples;
    t     (B,) times in [0, 1] (0 noise, 1 data), one per sample;
    cond  a `Condition` (or None) that the caller passes down to the network. Fields that carry their
          own condition (`BoundField`, guidance fields) ignore it; a field that forwards to another
          field passes it on unchanged;
    u     the velocity dx/dt, shaped like x.
`path` is the Gaussian path the field lives on (None for a field without one, e.g. an arbitrary ODE);
with a path, `x0_eps`, `predict(kind)` and `score` convert the velocity exactly
(see `nodes.parameterization`; divisions by alpha or beta are clamped at `clip`). `prediction` is the
kind the field computes directly (velocity, except a ModelField over an epsilon / x0 / v backbone):
`predict(x, t, cond, field.prediction)` costs no conversion.

To wrap a field, subclass `FieldWrapper` (it keeps the inner field's path and clip) and override
`__call__`; or call `wrap_field(field, fn)` with a plain function fn(x, t, cond) -> u.
Nothing runs until a solver calls the field.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .conditioning import Condition
from .parameterization import DEFAULT_CLIP, PREDICTIONS, convert, from_x0_eps, to_x0_eps
from .paths import GaussianPath


class VectorField:
    """Base class. Subclasses implement `__call__` (the velocity); `predict` converts through the path."""

    path: GaussianPath | None = None
    clip: float = DEFAULT_CLIP
    prediction: str = "velocity"
    samples_independent: bool = True
    """Row i of u depends on row i of x only (and on the i-th row of per-sample conditions). A solver may
    then run several list elements as one batch (see `nodegraph.lists`); a field that couples rows
    (prompt-to-prompt's source/target pairs) sets it False."""

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


class FieldWrapper(VectorField):
    """A field built around `inner`: same path and clip; override `__call__` (default: pass through)."""

    def __init__(self, inner: VectorField) -> None:
        if not isinstance(inner, VectorField):
            raise TypeError(f"expected a VectorField to wrap, got {type(inner).__name__}")
        self.inner = inner
        self.path = inner.path
        self.clip = inner.clip

    @property
    def samples_independent(self) -> bool:  # type: ignore[override]
        """As independent as the wrapped field (a wrapper that couples rows overrides this with False)."""
        return self.inner.samples_independent

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.inner(x, t, cond)


class _FunctionField(FieldWrapper):
    def __init__(self, inner: VectorField, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__(inner)
        self.fn = fn

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.fn(x, t, cond)


def wrap_field(field: VectorField, fn: Callable[..., torch.Tensor]) -> VectorField:
    """A field whose velocity is fn(x, t, cond), living on `field`'s path (so every solver can use it)."""
    return _FunctionField(field, fn)


class ModelField(VectorField):
    """A backbone f(x, t, cond) read as a `prediction` on `path`, exposed as a velocity.

    Velocity backbones are returned as is (no extra arithmetic); epsilon / x0 backbones are converted
    exactly with the path's alpha, beta (divisors clamped at `clip`, see nodes.parameterization).
    It is the MODEL_FIELD socket: attention editing needs the backbone behind it.
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


class BoundField(FieldWrapper):
    """`inner` with its condition fixed to `cond` (any condition passed at call time is ignored)."""

    def __init__(self, inner: VectorField, cond: Condition | None) -> None:
        super().__init__(inner)
        self.cond = cond

    def _cond(self, x: torch.Tensor) -> Condition | None:
        return None if self.cond is None else self.cond.bind(x)

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        return self.inner(x, t, self._cond(x))

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.x0_eps(x, t, self._cond(x))

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None,
                kind: str = "velocity") -> torch.Tensor:
        return self.inner.predict(x, t, self._cond(x), kind)


class CountingField(FieldWrapper):
    """Counts evaluations (NFE) of `inner`; a wrapper, so path-based solvers still work through it."""

    def __init__(self, inner: VectorField) -> None:
        super().__init__(inner)
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        self.calls += 1
        return self.inner(x, t, cond)

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.inner.x0_eps(x, t, cond)

    def predict(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None,
                kind: str = "velocity") -> torch.Tensor:
        self.calls += 1
        return self.inner.predict(x, t, cond, kind)
