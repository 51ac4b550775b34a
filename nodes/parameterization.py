"""Exact conversions between velocity, epsilon, x0 and score predictions on a Gaussian path.

With x = alpha x0 + beta eps (alpha, beta, alpha', beta' at time t):
    score    = -eps / beta
    velocity = alpha' x0 + beta' eps = (alpha'/alpha) x + (beta^2 alpha'/alpha - beta beta') score
    x0, eps from velocity u:  D = alpha' beta - alpha beta' (> 0 on every path here),
                              x0 = (beta u - beta' x) / D,   eps = (alpha' x - alpha u) / D.
    v        = alpha eps - beta x0 (Salimans & Ho's v-prediction, SD 2.x "v_prediction"); inverted with
               S = alpha^2 + beta^2 (1 on variance-preserving paths):
               x0 = (alpha x - beta v) / S,   eps = (beta x + alpha v) / S   (no division by alpha or beta).
Every conversion goes through the pair (x0, eps).

Singularities and the clipping used: going from epsilon or score to x0 divides by alpha (zero at
t = 0); going from x0 to epsilon, or anything to score, divides by beta (zero at t = 1). Those
divisors are clamped below at `clip` (default 1e-4), so values stay finite; the results are exact
whenever alpha, beta >= clip, which holds on any time grid kept inside [clip, 1 - clip]-ish.
Solvers for epsilon / score models should therefore start at t >= t_min > 0 (the time-grid nodes
have a t_min), and score-based steps should stop short of t = 1 or use sigma_t proportional to beta_t.
"""

from __future__ import annotations

from typing import Literal

import torch

from .broadcast import expand_time
from .paths import GaussianPath

Prediction = Literal["velocity", "epsilon", "x0", "score", "v"]
PREDICTIONS: tuple[str, ...] = ("velocity", "epsilon", "x0", "score", "v")
DEFAULT_CLIP = 1e-4


def _coefficients(path: GaussianPath, x: torch.Tensor, t: torch.Tensor | float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return path.coefficients(expand_time(t, x))


def to_x0_eps(prediction: torch.Tensor, kind: str, x: torch.Tensor, t: torch.Tensor | float,
              path: GaussianPath, clip: float = DEFAULT_CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) consistent with x = alpha x0 + beta eps and the given prediction of `kind`."""
    alpha, beta, d_alpha, d_beta = _coefficients(path, x, t)
    if kind == "velocity":
        det = d_alpha * beta - alpha * d_beta
        return (beta * prediction - d_beta * x) / det, (d_alpha * x - alpha * prediction) / det
    if kind in ("epsilon", "score"):
        eps = prediction if kind == "epsilon" else -beta * prediction
        return (x - beta * eps) / alpha.clamp_min(clip), eps
    if kind == "x0":
        return prediction, (x - alpha * prediction) / beta.clamp_min(clip)
    if kind == "v":
        norm = alpha * alpha + beta * beta
        return (alpha * x - beta * prediction) / norm, (beta * x + alpha * prediction) / norm
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")


def from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, kind: str, x: torch.Tensor, t: torch.Tensor | float,
                path: GaussianPath, clip: float = DEFAULT_CLIP) -> torch.Tensor:
    """The prediction of `kind` from (x0, eps): velocity alpha' x0 + beta' eps, score -eps/beta,
    v alpha eps - beta x0."""
    if kind == "x0":
        return x0
    if kind == "epsilon":
        return eps
    alpha, beta, d_alpha, d_beta = _coefficients(path, x, t)
    if kind == "velocity":
        return d_alpha * x0 + d_beta * eps
    if kind == "v":
        return alpha * eps - beta * x0
    if kind == "score":
        return -eps / beta.clamp_min(clip)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTIONS}")


def convert(prediction: torch.Tensor, source: str, target: str, x: torch.Tensor, t: torch.Tensor | float,
            path: GaussianPath, clip: float = DEFAULT_CLIP) -> torch.Tensor:
    """Convert a `source` prediction at (x, t) into a `target` one (identity when they agree)."""
    if source == target:
        return prediction
    x0, eps = to_x0_eps(prediction, source, x, t, path, clip)
    return from_x0_eps(x0, eps, target, x, t, path, clip)


def score_to_velocity(score: torch.Tensor, x: torch.Tensor, t: torch.Tensor | float, path: GaussianPath,
                      clip: float = DEFAULT_CLIP) -> torch.Tensor:
    """u = (alpha'/alpha) x + (beta^2 alpha'/alpha - beta beta') score (alpha clamped at `clip`)."""
    alpha, beta, d_alpha, d_beta = _coefficients(path, x, t)
    alpha = alpha.clamp_min(clip)
    return (d_alpha / alpha) * x + (beta * beta * d_alpha / alpha - beta * d_beta) * score


def guidance_coefficient(path: GaussianPath, t: torch.Tensor, clip: float = DEFAULT_CLIP) -> torch.Tensor:
    """b_t = (alpha' beta^2 - beta' beta alpha) / alpha: the weight of a score term in the velocity.

    Adding g to the score adds b_t g to the velocity; alpha is clamped at `clip` (b_t ~ 1/alpha at t = 0).
    """
    alpha, beta, d_alpha, d_beta = path.coefficients(t)
    return (d_alpha * beta * beta - d_beta * beta * alpha) / alpha.clamp_min(clip)

