"""The plugin's nodes: two SAMPLER makers and the sampling node that consumes them."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, node
from nodes.sockets import CONDITIONING, LATENT, PATH, TENSOR, TIME_GRID, VECTOR_FIELD

from .samplers import ddim_eta, dpmpp_2m
from .sockets import SAMPLER, SamplerSpec


@node("sampler_example/dpmpp_2m", category="solvers", display_name="DPM-Solver++(2M) sampler")
def dpmpp_2m_sampler() -> SAMPLER:
    """Second-order multistep sampler in x0 space: x_t = (beta_t/beta_s) x_s + (alpha_t - alpha_s beta_t/beta_s) D,
    D = (1 + h/(2 h_prev)) x0_s - h/(2 h_prev) x0_prev, h the step in log(alpha/beta). One field call per step."""
    return SamplerSpec("dpmpp_2m")


@node("sampler_example/ddim_eta", category="solvers", display_name="Stochastic DDIM sampler")
def ddim_eta_sampler(eta: Annotated[float, Field(ge=0, le=1)] = 1.0,
                     seed: Annotated[int, Field(ge=0)] = 0) -> SAMPLER:
    """x_t = alpha_t x0 + sqrt(beta_t^2 - g^2) eps + g z with g = eta beta_t sqrt(1 - e^{-2h}):
    eta = 0 is deterministic DDIM, eta = 1 re-noises as much as the marginals allow. Seeded."""
    return SamplerSpec("ddim_eta", eta=eta, seed=seed)


@node("sampler_example/sample", category="solvers", display_name="Sample (plugin sampler)")
def sample(ctx: Context, field: VECTOR_FIELD, noise: TENSOR, grid: TIME_GRID, sampler: SAMPLER,
           path: PATH = None, cond: CONDITIONING = None) -> LATENT:
    """Integrate the field from `noise` (t = 0) over the grid with the sampler. The Gaussian path comes
    from `path` when linked, else from the field itself (fields built by core/model_field carry it)."""
    path = path if path is not None else getattr(field, "path", None)
    if path is None:
        raise ValueError("this field has no probability path; link a PATH into 'path'")
    x = noise.to(ctx.device)
    with torch.no_grad():
        if sampler.method == "dpmpp_2m":
            return dpmpp_2m(field, path, x, grid, cond, ctx.progress)
        if sampler.method == "ddim_eta":
            return ddim_eta(field, path, x, grid, cond, ctx.progress, eta=sampler.eta,
                            generator=ctx.generator(sampler.seed))
    raise ValueError(f"unknown sampler method {sampler.method!r}")
