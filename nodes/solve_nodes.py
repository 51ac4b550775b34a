"""Sampling nodes: integrate a field from noise with any registered solver, or back from data to noise
(inversion) with the same solvers and the same loop; the initial noise."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import Field

from nodegraph import BatchAxis, Choice, Context, node

from .annotations import Seed
from .fields import CountingField
from .sigma import SigmaSchedule
from .sockets import CONDITIONING, LATENT, SIGMA_SCHEDULE, SOLVER, TENSOR, TIME_GRID, VECTOR_FIELD
from .solvers import Solver, dopri5, euler_maruyama
from .time_grids import reversed_grid

Tolerance = Annotated[float, Field(gt=0, le=1)]


class Solution(NamedTuple):
    latent: Annotated[LATENT, BatchAxis(0)]
    trajectory: Annotated[TENSOR, BatchAxis(1)]
    nfe: int


class Inversion(NamedTuple):
    noise: LATENT
    trajectory: TENSOR
    nfe: int


def _finish(x0: torch.Tensor, x: torch.Tensor, states: list[torch.Tensor] | None, nfe: int) -> Solution:
    trajectory = torch.stack([x0, *states]) if states is not None else torch.stack([x0, x])
    return Solution(x, trajectory, nfe)


def integrate(ctx: Context, field: VECTOR_FIELD, start: torch.Tensor, times: torch.Tensor, method: Solver,
              keep_trajectory: bool = False, cond: CONDITIONING = None) -> Solution:
    """Run `method` over `times` (increasing: sampling, decreasing: inversion) from `start`, counting the
    field's evaluations: the one loop behind core/ode_solve and core/invert."""
    counted = CountingField(field)
    states: list[torch.Tensor] | None = [] if keep_trajectory else None
    x0 = start.to(ctx.device)
    with torch.no_grad():
        x = method(counted, x0, times, cond, ctx.progress, states)
    return _finish(x0, x, states, counted.calls)


def _ode_solve_v1_to_v2(inputs: dict[str, Any]) -> dict[str, Any]:
    """v1 showed rtol / atol for every method; v2 takes them from a linked core/dopri5_solver.
    Values at the v1 defaults (every shipped workflow) are dropped: the registered dopri5 uses them."""
    for name in ("rtol", "atol"):
        value = inputs.pop(name, 1e-4)
        if inputs.get("method") == "dopri5" and float(value) != 1e-4:
            raise ValueError(f"dopri5 with {name}={value}: link a core/dopri5_solver with it into 'method'")
    return inputs


@node("core/ode_solve", version=2, migrations={1: _ode_solve_v1_to_v2}, category="solvers",
      display_name="ODE solver")
def ode_solve(ctx: Context, field: VECTOR_FIELD, noise: Annotated[TENSOR, BatchAxis(0)], grid: TIME_GRID,
              method: Annotated[SOLVER, Choice("solver")] = "euler", keep_trajectory: bool = False,
              cond: CONDITIONING = None) -> Solution:
    """Integrate dx/dt = u(x, t) from the initial sample `noise` over the time grid with any registered
    solver (plugins add theirs to `method`; link a solver node to set its options). Returns the final
    sample, the trajectory (grid times x batch ...; only start and end unless keep_trajectory) and the
    number of field evaluations. Fed a list of noises (a list of seeds), the elements are solved as one
    batch: one field evaluation per step for all of them (unless the field or solver couples samples)."""
    return integrate(ctx, field, noise, grid, method, keep_trajectory, cond)


@node("core/invert", category="solvers", display_name="ODE inversion (data to noise)")
def invert(ctx: Context, field: VECTOR_FIELD, latents: LATENT, grid: TIME_GRID,
           method: Annotated[SOLVER, Choice("solver")] = "euler", keep_trajectory: bool = False,
           cond: CONDITIONING = None) -> Inversion:
    """Integrate the probability-flow ODE backwards, from the data `latents` at the grid's last time to
    noise at its first: the sampler's own solver on the reversed grid, every step width
    h = t_{i+1} - t_i negative (for ddim the step is inverse DDIM). Link the same field (same prompt and
    guidance), grid and method as the sampler that regenerates: solving forward from `noise` then
    returns `latents` up to the solver's error there and back. Returns the noise, the trajectory (data
    first; only both ends unless keep_trajectory) and the number of field evaluations."""
    found = integrate(ctx, field, latents, reversed_grid(grid), method, keep_trajectory, cond)
    return Inversion(*found)


@node("core/dopri5_solver", category="solvers", display_name="Adaptive solver (dopri5)")
def dopri5_solver(rtol: Tolerance = 1e-4, atol: Tolerance = 1e-4,
                  max_steps: Annotated[int, Field(ge=1, le=1_000_000)] = 10000) -> SOLVER:
    """Dormand-Prince 5(4) with error control: a step is accepted when
    rms(err / (atol + rtol max(|x|, |x_new|))) <= 1. Link into a sampling node's `method`."""
    return Solver("dopri5", dopri5, {"rtol": rtol, "atol": atol, "max_steps": max_steps}, samples_independent=False)


@node("core/sde_solve", category="solvers", display_name="SDE solver (Euler-Maruyama)")
def sde_solve(ctx: Context, field: VECTOR_FIELD, noise: TENSOR, grid: TIME_GRID, sigma: SIGMA_SCHEDULE,
              seed: Seed = 0, keep_trajectory: bool = False, cond: CONDITIONING = None) -> Solution:
    """Euler-Maruyama for dX = [u + sigma_t^2/2 score] dt + sigma_t dW; same marginals as the ODE for
    any sigma_t. Seeded noise; one field evaluation per step."""
    states: list[torch.Tensor] | None = [] if keep_trajectory else None
    x0 = noise.to(ctx.device)
    with torch.no_grad():
        x = euler_maruyama(field, x0, grid, cond, ctx.progress, states, sigma=sigma,
                           generator=ctx.generator(seed))
    return _finish(x0, x, states, grid.numel() - 1)


@node("core/noise", category="solvers", display_name="Initial noise")
def noise(ctx: Context, shape: list[Annotated[int, Field(ge=1, le=65536)]] = [16, 2],  # noqa: B006
          seed: Seed = 0, std: Annotated[float, Field(gt=0, le=1000)] = 1.0) -> LATENT:
    """x_0 ~ N(0, std^2 I) of the given shape (e.g. [B, C, H, W] or [B, D]), reproducible from the seed
    (std = 1 for every path with beta_0 = 1; sigma_max for the VE path)."""
    numel = 1
    for size in shape:
        numel *= size
    if numel > 1 << 28:
        raise ValueError(f"shape {shape} has {numel} elements; the limit is {1 << 28}")
    return std * torch.randn(*shape, generator=ctx.generator(seed), device=ctx.device)


@node("core/sigma_schedule", category="solvers", display_name="Sigma schedule")
def sigma_schedule(kind: Literal["beta", "constant", "zero"] = "beta",
                   scale: Annotated[float, Field(ge=0, le=10)] = 1.0) -> SIGMA_SCHEDULE:
    """sigma_t for Euler-Maruyama: scale * beta_t (beta), scale (constant) or 0 (zero = ODE)."""
    return SigmaSchedule(kind, scale)
