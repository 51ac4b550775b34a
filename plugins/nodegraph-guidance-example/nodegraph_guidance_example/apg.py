"""Adaptive projected guidance as a VECTOR_FIELD wrapper.

With x = alpha x0 + beta eps and u = alpha' x0 + beta' eps, at fixed (x, t) the x0 prediction is affine
in the velocity: x0 = (beta' x - beta u) / det, det = alpha beta' - beta alpha'. So the CFG difference in
x0 space is  d = x0_c - x0_u = -(beta / det) (u_c - u_u). APG replaces the CFG update (w - 1) d by
    d  <- d min(1, r / ||d||)                       (norm threshold r, per sample)
    d  =  d_par + d_perp,  d_par = (<d, x0_c> / ||x0_c||^2) x0_c
    x0~ = x0_c + (w - 1) (d_perp + eta d_par)
and maps back to a velocity: u~ = u_c + (w - 1) (-det / beta) (d_perp + eta d_par).
eta = 1, r = inf gives u~ = u_c + (w - 1)(u_c - u_u) = (1 - w) u_u + w u_c: plain CFG.
APG is a guidance method (a combine rule): core/cfg evaluates cond and null in one batch and calls it.
"""

from __future__ import annotations

import math

import torch

from nodes.api import GaussianPath, GuidanceMethod, expand_time


def apg_combine(u_c: torch.Tensor, u_u: torch.Tensor, scale: torch.Tensor | float, x: torch.Tensor,
                t: torch.Tensor, path: GaussianPath | None, eta: float = 0.0, norm_threshold: float = 0.0,
                beta_min: float = 1e-3) -> torch.Tensor:
    """The guided velocity of the module formula; norm_threshold 0 means no cap."""
    if path is None:
        raise ValueError("APG needs a field with a Gaussian path (x0 predictions)")
    tt = expand_time(t, x)
    a, b = path.alpha(tt), path.beta(tt).clamp_min(beta_min)
    da, db = path.d_alpha(tt), path.d_beta(tt)
    det = a * db - b * da
    x0_c = (db * x - b * u_c) / det
    diff = -(b / det) * (u_c - u_u)
    dims = tuple(range(1, x.dim()))
    if norm_threshold > 0 and math.isfinite(norm_threshold):
        norm = diff.norm(dim=dims, keepdim=True).clamp_min(1e-12)
        diff = diff * (norm_threshold / norm).clamp(max=1.0)
    unit = x0_c / x0_c.norm(dim=dims, keepdim=True).clamp_min(1e-12)
    parallel = (diff * unit).sum(dim=dims, keepdim=True) * unit
    update = (diff - parallel) + eta * parallel
    return u_c + (scale - 1.0) * (-det / b) * update


APG = GuidanceMethod("apg", apg_combine, {"eta": 0.0, "norm_threshold": 0.0, "beta_min": 1e-3}, needs_path=True)
