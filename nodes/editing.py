"""Editing a given image with a flow or diffusion model: SDEdit (image to image) and inpainting.

Conventions: t = 0 noise, t = 1 data; x_t = alpha_t z + beta_t eps on the field's Gaussian path.

SDEdit ("diffuse, then denoise"). The image's latents z are noised to a start time t0 = 1 - strength,
    x_t0 = alpha_t0 z + beta_t0 eps,
and any solver integrates the field from t0 to the end of the grid. `truncate_grid` cuts a grid so it
starts at t0; `noise_to_time` noises to the first time of that grid, so the two agree by construction.
strength 0 keeps no step (the grid is [1]) and returns z; strength 1 keeps the whole grid, and on a
path with alpha_0 = 0, beta_0 = 1 the start is eps itself: text-to-image from the same noise.

Inpainting. A mask m in [0, 1] (1 = repaint, 0 = keep) at the latents' size and a fixed noise eps
define the original's path sample o_t = alpha_t z + beta_t eps. After every solver step (to time t):
    replace:       x <- m x + (1 - m) o_t                    (soft masks blend),
    differential:  x <- o_t where m <= 1 - t, else x         (pixel p is free from its own start 1 - m(p)),
and after the last step o = z itself, so the kept region ends exactly on the original. `known_region_solve`
does this around any registered solver by integrating the grid one interval at a time (a multistep
solver therefore restarts at every interval; every built-in solver is one-step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from .conditioning import Condition
from .fields import VectorField
from .paths import GaussianPath
from .solvers import Callback, Solver

TruncateMode = Literal["time", "steps"]
InpaintMode = Literal["replace", "differential"]
MaskResize = Literal["area", "nearest", "max"]

_SAME_TIME = 1e-9
"""Grid times closer than this to t0 count as t0 (1 - 0.6 and linspace's 0.4 differ in the last bit)."""


def truncate_grid(grid: torch.Tensor, strength: float, mode: TruncateMode = "time") -> torch.Tensor:
    """The part of an increasing time grid that SDEdit with `strength` integrates.

    time:  t0 = max(1 - strength, grid[0]); the grid's times after t0, with t0 itself put first.
    steps: diffusers' img2img rule: of the grid's n steps keep the last k = min(int(n strength), n),
           so t0 is a grid time (the model's own levels stay the model's levels).
    strength 0, or no step left, gives the one-time grid [1]: no step, the input comes back unchanged.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if mode not in ("time", "steps"):
        raise ValueError(f"mode {mode!r}: use time or steps")
    times = torch.as_tensor(grid, dtype=torch.float64).detach().cpu().flatten()
    if times.numel() < 1:
        raise ValueError("the grid is empty")
    nothing = torch.ones(1, dtype=torch.float64)
    if strength == 0.0:
        return nothing
    if mode == "steps":
        steps = times.numel() - 1
        kept = min(int(steps * strength), steps)
        return times[steps - kept:].clone() if kept > 0 else nothing
    t0 = max(1.0 - strength, float(times[0]))
    later = times[times > t0 + _SAME_TIME]
    if later.numel() == 0:
        return nothing
    return torch.cat([torch.tensor([t0], dtype=torch.float64), later])


def noise_to_time(path: GaussianPath, latents: torch.Tensor, noise: torch.Tensor, t0: float) -> torch.Tensor:
    """x_t0 = alpha_t0 z + beta_t0 eps, broadcast over the batch of z and eps.

    t0 = 1 returns z itself (exactly, whatever beta_1 is): the data end of the path."""
    shape = torch.broadcast_shapes(latents.shape, noise.shape)
    if t0 >= 1.0:
        return latents.expand(shape).clone()
    t = torch.tensor(float(t0), dtype=torch.float64)
    alpha = path.alpha(t).to(device=latents.device, dtype=latents.dtype)
    beta = path.beta(t).to(device=latents.device, dtype=latents.dtype)
    return alpha * latents + beta * noise.to(latents)


def fit_mask(mask: torch.Tensor, size: tuple[int, int], resize: MaskResize = "area") -> torch.Tensor:
    """A (B, 1, H, W) mask (one channel; several are averaged) resized to `size` = (h, w).

    area: the covered fraction of each target cell (soft edges); nearest: a sample per cell (diffusers'
    inpainting resize); max: a cell is repainted if any of it is (never keeps a painted pixel)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4:
        raise ValueError(f"a mask is (B, 1, H, W), got shape {tuple(mask.shape)}")
    mask = mask.float().mean(dim=1, keepdim=True) if mask.shape[1] != 1 else mask.float()
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.clamp(0, 1)
    if resize == "max":
        return F.adaptive_max_pool2d(mask, size).clamp(0, 1)
    if resize == "nearest":
        return F.interpolate(mask, size=size, mode="nearest").clamp(0, 1)
    if resize == "area":
        return F.interpolate(mask, size=size, mode="area").clamp(0, 1)
    raise ValueError(f"resize {resize!r}: use area, nearest or max")


@dataclass(frozen=True, eq=False)
class KnownRegion:
    """What inpainting keeps: the original latents z, the fixed noise eps of its path samples
    o_t = alpha_t z + beta_t eps, the repaint mask m (1 = repaint) at the latents' size, and the mode
    (see the module docstring)."""

    latents: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor
    mode: InpaintMode = "replace"

    def __post_init__(self) -> None:
        if self.mode not in ("replace", "differential"):
            raise ValueError(f"inpainting mode {self.mode!r}: use replace or differential")
        if tuple(self.mask.shape[-2:]) != tuple(self.latents.shape[-2:]):
            raise ValueError(f"the mask is {tuple(self.mask.shape[-2:])} but the latents are "
                             f"{tuple(self.latents.shape[-2:])}; resize it with fit_mask")

    def original(self, path: GaussianPath, t: float, like: torch.Tensor) -> torch.Tensor:
        """o_t = alpha_t z + beta_t eps; z itself at t = 1."""
        return noise_to_time(path, self.latents.to(like), self.noise.to(like), t)

    def repaint(self, t: float, like: torch.Tensor) -> torch.Tensor:
        """The weight of the solver's state at time t (1 - weight goes to the original)."""
        mask = self.mask.to(device=like.device, dtype=like.dtype)
        if self.mode == "replace":
            return mask
        return (mask > 1.0 - t).to(like.dtype)

    def apply(self, x: torch.Tensor, t: float, path: GaussianPath, final: bool = False) -> torch.Tensor:
        """The state after a step to time t with the kept region reset; `final`: reset to z itself."""
        weight = self.repaint(t, x)
        original = self.original(path, 1.0 if final else t, x)
        return weight * x + (1 - weight) * original


def known_region_solve(field: VectorField, x: torch.Tensor, times: torch.Tensor, cond: Condition | None = None,
                       callback: Callback = None, trajectory: list[torch.Tensor] | None = None, *,
                       inner: Solver, region: KnownRegion) -> torch.Tensor:
    """Run `inner` over the grid one interval at a time, resetting the kept region after every interval
    (`KnownRegion.apply`, with z itself after the last). Follows the `SolverFn` signature."""
    path = field.require_path()
    grid = torch.as_tensor(times).detach()
    steps = grid.numel() - 1
    for i in range(steps):
        x = inner(field, x, grid[i:i + 2], cond)
        x = region.apply(x, float(grid[i + 1]), path, final=i == steps - 1)
        if trajectory is not None:
            trajectory.append(x)
        if callback is not None:
            callback(i + 1, steps)
    return x


def inpainting_solver(inner: Solver, region: KnownRegion) -> Solver:
    """`inner` (any registered solver, options bound) wrapped to keep `region`: a SOLVER value."""
    options: dict[str, Any] = {"inner": inner, "region": region}
    return Solver(f"inpaint({inner.name})", known_region_solve, options, needs_path=True)
