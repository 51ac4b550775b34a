"""Adaptive projected guidance as a VECTOR_FIELD wrapper.

With x = alpha x0 + beta eps and u = alpha' x0 + beta' eps, at fixed (x, t) the x0 prediction is affine
in the velocity: x0 = (beta' x - beta u) / det, det = alpha beta' - beta alpha'. So the CFG difference in
x0 space is  d = x0_c - x0_u = -(beta / det) (u_c - u_u). APG replaces the CFG update (w - 1) d by
    d  <- d min(1, r / ||d||)                       (norm threshold r, per sample)
    d  =  d_par + d_perp,  d_par = (<d, x0_c> / ||x0_c||^2) x0_c
    x0~ = x0_c + (w - 1) (d_perp + eta d_par)
and maps back to a velocity: u~ = u_c + (w - 1) (-det / beta) (d_perp + eta d_par).
eta = 1, r = inf gives u~ = u_c + (w - 1)(u_c - u_u) = (1 - w) u_u + w u_c: plain CFG.
"""

from __future__ import annotations

import math

import torch

from nodes.conditioning import Condition
from nodes.fields import VectorField, bind


def _per_sample(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)


class APGField(VectorField):
    """Guided velocity from one batched pass of cond and null through `field` (see the module formula)."""

    def __init__(self, field: VectorField, cond: Condition, null: Condition, scale: float,
                 eta: float = 0.0, norm_threshold: float = math.inf, beta_min: float = 1e-3) -> None:
        self.field = field
        self.cond, self.null = cond, null
        self.scale, self.eta = float(scale), float(eta)
        self.norm_threshold = float(norm_threshold)
        self.beta_min = float(beta_min)
        self.path = field.require_path()
        self.clip = field.clip

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        both = self.field(torch.cat([x, x]), torch.cat([t, t]),
                          Condition.cat([bind(self.cond, x), bind(self.null, x)]))
        u_c, u_u = both[: x.shape[0]], both[x.shape[0]:]
        if self.scale == 1.0:
            return u_c
        path = self.path
        a, b = _per_sample(path.alpha(t), x), _per_sample(path.beta(t), x).clamp_min(self.beta_min)
        da, db = _per_sample(path.d_alpha(t), x), _per_sample(path.d_beta(t), x)
        det = a * db - b * da
        x0_c = (db * x - b * u_c) / det
        diff = -(b / det) * (u_c - u_u)
        dims = tuple(range(1, x.dim()))
        if math.isfinite(self.norm_threshold):
            norm = diff.norm(dim=dims, keepdim=True).clamp_min(1e-12)
            diff = diff * (self.norm_threshold / norm).clamp(max=1.0)
        unit = x0_c / x0_c.norm(dim=dims, keepdim=True).clamp_min(1e-12)
        parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
        update = (diff - parallel) + self.eta * parallel
        return u_c + (self.scale - 1.0) * (-det / b) * update
