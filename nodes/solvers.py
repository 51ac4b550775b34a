"""ODE / SDE solvers for a VECTOR_FIELD on a time grid, all with one signature (the `SolverFn` protocol):

    solver(field, x, times, cond=None, callback=None, trajectory=None, **options) -> x at times[-1]

`times` is a monotone 1-D grid: increasing integrates towards data (sampling), decreasing integrates
backwards towards noise (inversion, `core/invert`); every step width h = t_{i+1} - t_i carries the
direction, so the same formulas serve both (for DDIM, the step to a smaller time is inverse DDIM).
The field is called as field(x, t, cond) with t of shape (B,).
`callback(step, total)` runs once per step (the nodes pass ctx.progress: progress + cancellation);
`trajectory`, when a list, receives the state at every grid time after the first.
A `Solver` is such a function with a name and its options; adding a solver is writing one function
and registering `Solver(name, fn)` as the component ("solver", name) - the built-in sampling node
then offers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from .broadcast import expand_time
from .conditioning import Condition
from .fields import VectorField
from .sigma import SigmaSchedule

Field_ = Callable[..., torch.Tensor]
Callback = Callable[[int, int], None] | None


class SolverFn(Protocol):
    """What a solver function looks like (options are keyword arguments after `trajectory`)."""

    def __call__(self, field: VectorField, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
                 callback: Callback = None, trajectory: list[torch.Tensor] | None = None,
                 **options: Any) -> torch.Tensor: ...


@dataclass(frozen=True)
class Solver:
    """A named solver function with its options bound: the SOLVER socket's value.

    `needs_path`: the solver converts the velocity to x0 / eps (DDIM, DPM-Solver...), so the field
    must have a Gaussian path; checked before the first step.
    """

    name: str
    fn: SolverFn
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_path: bool = False
    samples_independent: bool = True
    """Each sample's path depends on its own row only, so list elements may be solved as one batch
    (`nodegraph.lists`). False for a solver that couples rows (a step size chosen from the error of the
    whole batch) or draws random numbers for the batch (a stochastic sampler)."""

    def __call__(self, field: VectorField, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
                 callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.needs_path and getattr(field, "path", None) is None:
            raise ValueError(f"solver {self.name!r} needs a field with a Gaussian path (x0 / eps predictions); "
                             "build the field with core/model_field or wrap one with nodes.api.FieldWrapper")
        return self.fn(field, x, times, cond, callback, trajectory, **self.options)

    def configured(self, **options: Any) -> Solver:
        """This solver with some options changed (unknown names are an error)."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(f"solver {self.name!r} has no option(s) {unknown}; its options are {sorted(self.options)}")
        return replace(self, options={**self.options, **options})


def _steps(x: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, int]:
    return times.to(device=x.device, dtype=x.dtype), times.numel() - 1


def _record(trajectory: list[torch.Tensor] | None, x: torch.Tensor) -> None:
    if trajectory is not None:
        trajectory.append(x)


def euler(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
          callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """x_{i+1} = x_i + h u(x_i, t_i): first order, one evaluation per step.

    Its own loop (not `_fixed_steps`) because it is the default sampler: step times and widths are
    built once up front, so a step costs the field call and one multiply-add.
    """
    ts, n = _steps(x, times)
    starts = ts[:-1, None].expand(n, x.shape[0]).unbind(0)  # per-step (B,) times, built once
    widths = (ts[1:] - ts[:-1]).unbind(0)
    for i in range(n):
        x = x + widths[i] * field(x, starts[i], cond)
        _record(trajectory, x)
        if callback is not None:
            callback(i + 1, n)
    return x


def _fixed_steps(step: Callable[..., torch.Tensor], field: Field_, x: torch.Tensor, times: torch.Tensor,
                 cond: Condition | None, callback: Callback, trajectory: list[torch.Tensor] | None) -> torch.Tensor:
    """The loop shared by the fixed-grid Runge-Kutta methods: x <- step(field, x, t (B,), h, cond)."""
    ts, n = _steps(x, times)
    batch = x.shape[0]
    for i in range(n):
        x = step(field, x, ts[i].expand(batch), ts[i + 1] - ts[i], cond)
        _record(trajectory, x)
        if callback is not None:
            callback(i + 1, n)
    return x


def _heun_step(field: Field_, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, cond: Condition | None
               ) -> torch.Tensor:
    k1 = field(x, t, cond)
    k2 = field(x + h * k1, t + h, cond)
    return x + 0.5 * h * (k1 + k2)


def _midpoint_step(field: Field_, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, cond: Condition | None
                   ) -> torch.Tensor:
    k1 = field(x, t, cond)
    return x + h * field(x + 0.5 * h * k1, t + 0.5 * h, cond)


def _rk4_step(field: Field_, x: torch.Tensor, t: torch.Tensor, h: torch.Tensor, cond: Condition | None
              ) -> torch.Tensor:
    k1 = field(x, t, cond)
    k2 = field(x + 0.5 * h * k1, t + 0.5 * h, cond)
    k3 = field(x + 0.5 * h * k2, t + 0.5 * h, cond)
    k4 = field(x + h * k3, t + h, cond)
    return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def heun(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
         callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Heun (trapezoidal predictor-corrector): second order, two evaluations per step."""
    return _fixed_steps(_heun_step, field, x, times, cond, callback, trajectory)


def midpoint(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
             callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Explicit midpoint: x + h u(x + h/2 u(x, t), t + h/2); second order, two evaluations per step."""
    return _fixed_steps(_midpoint_step, field, x, times, cond, callback, trajectory)


def rk4(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
        callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Classical Runge-Kutta: fourth order, four evaluations per step."""
    return _fixed_steps(_rk4_step, field, x, times, cond, callback, trajectory)


# Dormand-Prince 5(4) tableau: nodes C, stages A, 5th-order weights B5 (= last row, FSAL), error B5 - B4.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip((*_A[6], 0.0), _B4, strict=True))


def _rms(value: torch.Tensor) -> float:
    return float(value.pow(2).mean().sqrt())


def dopri5(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
           callback: Callback = None, trajectory: list[torch.Tensor] | None = None,
           rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 10000) -> torch.Tensor:
    """Adaptive Dormand-Prince 5(4) with error control: accept a step when
    rms(err / (atol + rtol max(|x|, |x_new|))) <= 1; h <- h min(5, max(0.2, 0.9 err^(-1/5))).
    Integrates grid interval by interval (so `trajectory` holds the grid times); the callback reports
    progress in thousandths of the time span after every accepted step."""
    ts = times.detach().to("cpu", torch.float64)
    span = float(ts[-1] - ts[0])
    direction = 1.0 if span >= 0 else -1.0  # a decreasing grid integrates backwards; h stays positive
    batch = x.shape[0]

    def f(state: torch.Tensor, t: float) -> torch.Tensor:
        return field(state, torch.full((batch,), t, device=x.device, dtype=x.dtype), cond)

    t = float(ts[0])
    k1 = f(x, t)
    scale = atol + rtol * x.abs()
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    h = 0.01 * d0 / d1 if d0 > 1e-5 and d1 > 1e-5 else 1e-6
    h = min(h, abs(span))
    steps = 0
    for end in ts[1:].tolist():
        while direction * (end - t) > 0:
            h = min(h, direction * (end - t))
            step = direction * h
            stages = [k1]
            for row, c in zip(_A[1:], _C[1:], strict=True):
                increment = sum(a * k for a, k in zip(row, stages, strict=False) if a != 0.0)
                stages.append(f(x + step * increment, t + c * step))
            x_new = x + step * sum(a * k for a, k in zip(_A[6], stages, strict=False) if a != 0.0)
            k7 = stages[-1]
            error = h * sum(e * k for e, k in zip(_E, stages, strict=True) if e != 0.0)
            tolerance = atol + rtol * torch.maximum(x.abs(), x_new.abs())
            err = _rms(error / tolerance)
            if err <= 1.0:
                t, x, k1 = (end if direction * (end - (t + step)) < 1e-12 * abs(span) else t + step), x_new, k7
                steps += 1
                if callback is not None:
                    callback(int(1000 * (t - float(ts[0])) / span), 1000)
            if steps > max_steps:
                raise RuntimeError(f"dopri5 needed more than {max_steps} steps; loosen rtol/atol")
            h *= min(5.0, max(0.2, 0.9 * (err if err > 0 else 1e-10) ** -0.2))
        _record(trajectory, x)
    return x


def ddim(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
         callback: Callback = None, trajectory: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Deterministic DDIM on the field's path: (x0, eps) = predictions at t_i, x_{i+1} = alpha_{i+1} x0 +
    beta_{i+1} eps. Exact for a Gaussian data point; equals Euler on CondOT with a velocity model.
    The coefficients of every step's end are computed once, before the loop. On a decreasing grid the
    same step is inverse DDIM (predictions at the cleaner t_i, moved to the noisier t_{i+1})."""
    path = field.require_path()
    ts, n = _steps(x, times)
    starts = ts[:-1, None].expand(n, x.shape[0]).unbind(0)  # per-step (B,) times, built once
    alphas, betas = path.alpha(ts[1:]).unbind(0), path.beta(ts[1:]).unbind(0)  # at every step's end, once
    for i in range(n):
        x0, eps = field.x0_eps(x, starts[i], cond)
        x = alphas[i] * x0 + betas[i] * eps
        _record(trajectory, x)
        if callback is not None:
            callback(i + 1, n)
    return x


def euler_maruyama(field: Field_, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
                   callback: Callback = None, trajectory: list[torch.Tensor] | None = None,
                   sigma: SigmaSchedule | None = None, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Euler-Maruyama for dX = [u + sigma_t^2/2 score] dt + sigma_t dW (score from the same evaluation
    as u, exact on the field's path). Noise is drawn from `generator`; sigma_t = 0 is Euler."""
    sigma = sigma or SigmaSchedule("zero")
    if sigma.is_zero:
        return euler(field, x, times, cond, callback, trajectory)
    path = field.require_path()
    ts, n = _steps(x, times)
    if bool((ts[1:] < ts[:-1]).any()):
        raise ValueError("Euler-Maruyama integrates forward in time only (the noise term needs h > 0); "
                         "invert with an ODE solver (sigma = 0)")
    batch = x.shape[0]
    for i in range(n):
        h = ts[i + 1] - ts[i]
        t = ts[i].expand(batch)
        x0, eps = field.x0_eps(x, t, cond)
        tt = expand_time(t, x)
        velocity = path.d_alpha(tt) * x0 + path.d_beta(tt) * eps
        score = -eps / path.beta(tt).clamp_min(field.clip)
        sig = sigma(tt, path)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + h * (velocity + 0.5 * sig * sig * score) + sig * h.sqrt() * noise
        _record(trajectory, x)
        if callback is not None:
            callback(i + 1, n)
    return x


BUILTIN_SOLVERS: tuple[Solver, ...] = (
    Solver("euler", euler), Solver("heun", heun), Solver("midpoint", midpoint), Solver("rk4", rk4),
    Solver("dopri5", dopri5, {"rtol": 1e-4, "atol": 1e-4, "max_steps": 10000}, samples_independent=False),
    Solver("ddim", ddim, needs_path=True),
)
"""Registered as ("solver", name) components by the built-in library."""
