"""Nodes for editing a given image: SDEdit (start the solve at strength) and inpainting (keep a region).

SDEdit:     core/truncate_grid -> core/noise_to_time -> any sampling node on the truncated grid.
Inpainting: the same start, and core/inpaint_solver (wrapping any registered solver) as the sampling
            node's `method`. Formulas in nodes.editing.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

import torch

from nodegraph import Choice, Context, node

from .annotations import Seed, Unit
from .editing import InpaintMode, KnownRegion, MaskResize, TruncateMode, fit_mask, inpainting_solver, noise_to_time
from .editing import truncate_grid as truncate
from .sockets import LATENT, MASK, PATH, SOLVER, TIME_GRID


@node("core/truncate_grid", category="editing", display_name="Start grid at strength (SDEdit)")
def truncate_grid(grid: TIME_GRID, strength: Unit = 0.6, mode: TruncateMode = "time") -> TIME_GRID:
    """The part of any grid (uniform, shifted, the model's own) that image-to-image integrates.
    time: starts at t0 = max(1 - strength, grid[0]) exactly, then the grid's later times.
    steps: keeps the last int(n strength) of the n steps, as diffusers' img2img does (t0 is a grid time:
    use it with core/model_time_grid to match diffusers). strength 0 gives [1]: no step, the input back."""
    return truncate(grid, strength, mode)


class Noised(NamedTuple):
    latent: LATENT
    noise: LATENT


@node("core/noise_to_time", category="editing", display_name="Noise image to start time (SDEdit)")
def noise_to_time_node(ctx: Context, path: PATH, latents: LATENT, grid: TIME_GRID, seed: Seed = 0,
                       noise: LATENT = None) -> Noised:
    """x_t0 = alpha_t0 z + beta_t0 eps with t0 = the first time of `grid` (link core/truncate_grid's, the
    same the solver uses): the image's latents z sent back along the path. eps is `noise` when linked
    (batch B makes B variations), else drawn from the seed like core/latent_noise and diffusers draw
    theirs (CPU-seeded, so the same on every device); it is also output, for core/inpaint_solver.
    t0 = 1 returns z exactly. DDPM schedules (SD) have alpha_0 > 0, so at strength 1 the image still
    shows faintly through, exactly as in diffusers' img2img (their inpainting starts from pure noise
    instead: link the noise itself as the solver's start for that)."""
    if noise is None:
        eps = torch.randn(tuple(latents.shape), generator=ctx.generator(seed, device="cpu"))
    else:
        eps = noise
    eps = eps.to(device=latents.device, dtype=latents.dtype)
    return Noised(noise_to_time(path, latents, eps, float(grid[0])), eps)


@node("core/inpaint_solver", category="editing", display_name="Inpainting solver (keep the unmasked region)")
def inpaint_solver(latents: LATENT, mask: MASK, noise: LATENT,
                   method: Annotated[SOLVER, Choice("solver")] = "euler", mode: InpaintMode = "replace",
                   resize: MaskResize = "area") -> SOLVER:
    """Wrap any registered solver (`method`; a linked solver keeps its options) so that after every step
    to time t the kept region follows the original z: o_t = alpha_t z + beta_t eps with the fixed `noise`
    eps, and z itself after the last step. replace: x <- m x + (1 - m) o_t (1 = repaint; soft masks
    blend); differential: x <- o_t where m <= 1 - t, so each pixel is repainted from its own start time
    1 - m (a soft mask is a per-pixel strength). The mask is resized to the latents (area: soft edges;
    nearest: as diffusers; max: repaint every cell it touches). Link into a sampling node's `method`;
    outpainting is this with core/pad_image's mask."""
    fitted = fit_mask(mask.to(latents.device), tuple(latents.shape[-2:]), resize)
    return inpainting_solver(method, KnownRegion(latents, noise.to(latents), fitted, mode))
