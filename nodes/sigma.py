"""Diffusion coefficients sigma_t for SDE sampling: dX = [u + sigma_t^2 / 2 * score] dt + sigma_t dW.

Any sigma_t leaves the marginals p_t unchanged (the score term compensates the added noise);
sigma_t = 0 is the probability-flow ODE.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field

from nodegraph import node

from .paths import GaussianPath
from .sockets import SIGMA_SCHEDULE


class SigmaSchedule:
    """sigma_t = scale (constant), scale * beta_t (proportional to beta) or 0 (ODE)."""

    def __init__(self, kind: str = "beta", scale: float = 1.0) -> None:
        if kind not in ("constant", "beta", "zero"):
            raise ValueError(f"unknown sigma schedule {kind!r}")
        self.kind = kind
        self.scale = float(scale) if kind != "zero" else 0.0

    @property
    def is_zero(self) -> bool:
        return self.scale == 0.0

    def __call__(self, t: torch.Tensor, path: GaussianPath) -> torch.Tensor:
        if self.kind == "beta":
            return self.scale * path.beta(t)
        return torch.full_like(t, self.scale)

    def __repr__(self) -> str:
        return f"SigmaSchedule({self.kind!r}, {self.scale})"


@node("core/sigma_schedule", category="solvers", display_name="Sigma schedule")
def sigma_schedule(kind: Literal["beta", "constant", "zero"] = "beta",
                   scale: Annotated[float, Field(ge=0, le=10)] = 1.0) -> SIGMA_SCHEDULE:
    """sigma_t for Euler-Maruyama: scale * beta_t (beta), scale (constant) or 0 (zero = ODE)."""
    return SigmaSchedule(kind, scale)
