"""Samplers for a Gaussian path x = alpha_t x0 + beta_t eps, driven by any velocity field u(x, t, cond).

At each grid time s the field gives its (x0, eps) predictions exactly through its path
(`VectorField.x0_eps`: x = alpha x0 + beta eps, u = alpha' x0 + beta' eps). With lambda = log(alpha / beta)
and h = lambda_t - lambda_s, one step from s to t is
    DPM-Solver++(2M):  x_t = (beta_t / beta_s) x_s + (alpha_t - alpha_s beta_t / beta_s) D,
                       D = (1 + c) x0_s - c x0_prev,  c = h / (2 h_prev);
                       a step touching an end (h or h_prev infinite: t = 0 or beta = 0) is first order,
                       the DDIM step x_t = alpha_t x0 + beta_t eps (onto beta_t = 0: x_1 = x0_s);
    stochastic DDIM:   x_t = alpha_t x0 + sqrt(beta_t^2 - g^2) eps + g z,  g = eta beta_t sqrt(1 - e^{-2h}),
which keeps the marginal variance beta_t^2 for any eta in [0, 1] (eta = 0 is deterministic DDIM).
On a decreasing grid (inversion, core/invert: data back to noise) the same formulas step backwards;
only eta = 0 can: fresh noise is not invertible.
On a grid uniform in t the last steps stay long in lambda; grids uniform in lambda suit 2M best.
"""

from __future__ import annotations

import math

import torch

from nodes.api import Callback, Condition, GaussianPath, VectorField


def _alpha_beta(path: GaussianPath, t: float) -> tuple[float, float]:
    tt = torch.tensor([t], dtype=torch.float64)
    return float(path.alpha(tt)), float(path.beta(tt))


def _predictions(field: VectorField, x: torch.Tensor, s: float, cond: Condition | None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) at time s from one field evaluation."""
    return field.x0_eps(x, torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device), cond)


TINY = 1e-8
"""alpha or beta below this counts as 0 (cos(pi / 2) is 6e-17, not 0)."""


def _log_snr(a: float, b: float) -> float:
    if a <= TINY:
        return -math.inf
    if b <= TINY:
        return math.inf
    return math.log(a) - math.log(b)


def dpmpp_2m(field: VectorField, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
             callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in x0 space, one field evaluation per step, on the
    field's own path (the nodes.api solver signature, so core/ode_solve can run it)."""
    path = field.require_path()
    ts = [float(v) for v in times]
    total = len(ts) - 1
    x0_prev, h_prev = None, math.inf
    for i in range(total):
        s, t = ts[i], ts[i + 1]
        a_s, b_s = _alpha_beta(path, s)
        a_t, b_t = _alpha_beta(path, t)
        x0, eps = _predictions(field, x, s, cond)
        h = _log_snr(a_t, b_t) - _log_snr(a_s, b_s)
        if b_t <= TINY:  # the last step, onto the data (h infinite)
            x = a_t * x0
        elif x0_prev is None or not (math.isfinite(h) and math.isfinite(h_prev)):
            x = a_t * x0 + b_t * eps  # first order (DDIM) next to an end where lambda is infinite
        else:
            c = h / (2 * h_prev)
            d = (1 + c) * x0 - c * x0_prev
            # = (beta_t/beta_s) x_s + (alpha_t - alpha_s beta_t/beta_s) D, using x_s = alpha_s x0 + beta_s eps
            x = a_t * d + b_t * (eps + a_s * (x0 - d) / b_s)
        x0_prev, h_prev = x0, h
        if trajectory is not None:
            trajectory.append(x)
        if callback is not None:
            callback(i + 1, total)
    return x


def ddim_eta(field: VectorField, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
             callback: Callback = None, trajectory: list[torch.Tensor] | None = None, eta: float = 1.0,
             seed: int = 0) -> torch.Tensor:
    """Stochastic DDIM: first order, one evaluation per step, fresh noise g z each step drawn from `seed`."""
    path = field.require_path()
    generator = torch.Generator(device=x.device).manual_seed(seed)
    ts = [float(v) for v in times]
    if eta > 0 and any(b < a for a, b in zip(ts[:-1], ts[1:], strict=True)):
        raise ValueError("stochastic DDIM (eta > 0) runs forward in time only: fresh noise cannot be inverted; "
                         "invert with eta = 0 or an ODE solver")
    total = len(ts) - 1
    for i in range(total):
        s, t = ts[i], ts[i + 1]
        a_s, b_s = _alpha_beta(path, s)
        a_t, b_t = _alpha_beta(path, t)
        x0, eps = _predictions(field, x, s, cond)
        decay = (a_s * b_t) / (b_s * a_t) if a_t > 0 and b_s > 0 else 0.0
        g = eta * b_t * math.sqrt(max(0.0, 1.0 - decay * decay))
        x = a_t * x0 + math.sqrt(max(0.0, b_t * b_t - g * g)) * eps
        if g > 0:
            x = x + g * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if trajectory is not None:
            trajectory.append(x)
        if callback is not None:
            callback(i + 1, total)
    return x
