"""Time grids for solvers: increasing float64 times from noise (t near 0) to data (t = 1)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import node

from .paths import GaussianPath
from .schedules import RectifiedFlowPath, flow_grid, model_grid
from .sockets import LATENT, PATH, TIME_GRID

Steps = Annotated[int, Field(ge=1, le=10000)]
Unit = Annotated[float, Field(ge=0, le=1)]


def uniform_grid(steps: int, t_min: float = 0.0, t_max: float = 1.0) -> torch.Tensor:
    """steps + 1 equally spaced times from t_min to t_max."""
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    return torch.linspace(t_min, t_max, steps + 1, dtype=torch.float64)


def shift_times(t: torch.Tensor, shift: float) -> torch.Tensor:
    """SD3-style timestep shift on the noise level s = 1 - t: s' = shift s / (1 + (shift - 1) s).

    shift > 1 spends more of the steps at high noise (small t); shift = 1 is the identity.
    """
    s = 1 - t
    return 1 - shift * s / (1 + (shift - 1) * s)


def karras_grid(steps: int, path: GaussianPath, sigma_min: float = 0.002, sigma_max: float = 80.0,
                rho: float = 7.0) -> torch.Tensor:
    """EDM / Karras spacing of the noise-to-signal ratio sigma = beta_t / alpha_t, mapped back to t.

    sigma_i = (sigma_max^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
    i < steps, then t = 1 (sigma = 0). t(sigma) is found by bisection (beta/alpha decreases in t).
    The first time is > 0: start the solver from N(0, I), which approximates p_t0 when beta_t0 ~ 1.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    lo_root, hi_root = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (lo_root + ramp * (hi_root - lo_root)) ** rho
    lo = torch.zeros_like(sigmas)
    hi = torch.ones_like(sigmas)
    for _ in range(60):
        mid = (lo + hi) / 2
        ratio = path.beta(mid) / path.alpha(mid).clamp_min(1e-300)
        above = ratio > sigmas
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return torch.cat([(lo + hi) / 2, torch.ones(1, dtype=torch.float64)])


def custom_grid(times: list[float]) -> torch.Tensor:
    """A user-given grid; it must be strictly increasing and inside [0, 1]."""
    grid = torch.tensor(times, dtype=torch.float64)
    if grid.numel() < 2 or bool((grid[1:] <= grid[:-1]).any()) or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"a time grid needs >= 2 strictly increasing times in [0, 1], got {times}")
    return grid


@node("core/uniform_grid", category="solvers", display_name="Uniform time grid")
def uniform_grid_node(steps: Steps = 50, t_min: Unit = 0.0, t_max: Unit = 1.0) -> TIME_GRID:
    """t_i = t_min + i (t_max - t_min) / steps, i = 0..steps."""
    return uniform_grid(steps, t_min, t_max)


@node("core/shifted_grid", category="solvers", display_name="Shifted time grid")
def shifted_grid_node(steps: Steps = 50, shift: Annotated[float, Field(gt=0, le=100)] = 3.0,
                      t_min: Unit = 0.0) -> TIME_GRID:
    """Uniform grid with the SD3 shift on s = 1 - t: s' = shift s / (1 + (shift - 1) s)."""
    return shift_times(uniform_grid(steps, t_min, 1.0), shift)


@node("core/karras_grid", category="solvers", display_name="Karras (EDM) time grid")
def karras_grid_node(path: PATH, steps: Steps = 30, sigma_min: Annotated[float, Field(gt=0)] = 0.002,
                     sigma_max: Annotated[float, Field(gt=0)] = 80.0,
                     rho: Annotated[float, Field(gt=0, le=100)] = 7.0) -> TIME_GRID:
    """EDM spacing of sigma = beta_t/alpha_t from sigma_max to sigma_min (rho-warped), then t = 1."""
    return karras_grid(steps, path, sigma_min, sigma_max, rho)


@node("core/custom_grid", category="solvers", display_name="Custom time grid")
def custom_grid_node(times: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]) -> TIME_GRID:  # noqa: B006
    """A strictly increasing list of times in [0, 1]."""
    return custom_grid(times)


def reversed_grid(grid: torch.Tensor) -> torch.Tensor:
    """A sampling grid (strictly increasing, noise to data) run backwards, data to noise, for inversion."""
    if grid.dim() != 1 or grid.numel() < 2 or bool((grid[1:] <= grid[:-1]).any()):
        raise ValueError(f"inversion takes a sampling grid: >= 2 strictly increasing times, got {grid.tolist()}")
    return grid.flip(0)


def latent_tokens(latents: torch.Tensor | None) -> int | None:
    """Image tokens of a (B, C, H, W) latent in 2x2 patches, (H/2)(W/2): what Flux's shift depends on."""
    if latents is None:
        return None
    return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)


@node("core/model_time_grid", category="solvers", display_name="Model's own time grid")
def model_time_grid_node(path: PATH, steps: Steps = 30, latents: LATENT = None) -> TIME_GRID:
    """The grid the model's own scheduler uses, from the path a model loader outputs. DDPM schedules
    (SD 1.x/2.x/SDXL): the scheduler's levels tau_i, t_i = 1 - (tau_i + 1)/N, then the final level.
    Flow matching (SD3/Flux): shifted noise levels s_i, t_i = 1 - s_i, then t = 1; a resolution-dependent
    shift (Flux) needs `latents` linked, for their size."""
    return model_grid(path, steps, latent_tokens(latents))


@node("core/sd3_shift_grid", category="solvers", display_name="Flow-matching shift grid (SD3)")
def sd3_shift_grid_node(steps: Steps = 28, shift: Annotated[float, Field(gt=0, le=100)] = 3.0) -> TIME_GRID:
    """Noise levels s_i = linspace(1, s_min, steps) shifted by s' = shift s / (1 + (shift - 1) s), then 0,
    as t = 1 - s' (SD3's FlowMatchEuler schedule; s_min = shift(1/1000))."""
    return flow_grid(RectifiedFlowPath(shift=shift), steps)


@node("core/flux_shift_grid", category="solvers", display_name="Resolution-shift grid (Flux)")
def flux_shift_grid_node(latents: LATENT, steps: Steps = 28, base_shift: Annotated[float, Field(ge=0, le=10)] = 0.5,
                         max_shift: Annotated[float, Field(ge=0, le=10)] = 1.15,
                         base_tokens: Annotated[int, Field(ge=1)] = 256,
                         max_tokens: Annotated[int, Field(ge=2)] = 4096) -> TIME_GRID:
    """Flux's schedule: s_i = linspace(1, 1/steps, steps), s' = e^mu / (e^mu + 1/s - 1) with
    mu = base_shift + (max_shift - base_shift)(n - base_tokens)/(max_tokens - base_tokens), n = (H/2)(W/2)
    latent patches of `latents`; then t = 1 - s'."""
    path = RectifiedFlowPath(dynamic=True, base_shift=base_shift, max_shift=max_shift, base_tokens=base_tokens,
                             max_tokens=max_tokens, spacing="flux")
    return flow_grid(path, steps, latent_tokens(latents))
