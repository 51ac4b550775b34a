"""Diffusion coefficients sigma_t for SDE sampling: dX = [u + sigma_t^2 / 2 * score] dt + sigma_t dW.

Any sigma_t leaves the marginals p_t unchanged (the score term compensates the added noise);
sigma_t = 0 is the probability-flow ODE.
"""

from __future__ import annotations

import torch

from .paths import GaussianPath


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

