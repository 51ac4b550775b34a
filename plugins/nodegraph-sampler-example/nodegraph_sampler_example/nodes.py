"""The plugin's node: stochastic DDIM with its options, linkable into any sampling node's `method`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph import node
from nodes.api import SOLVER, Seed, Solver

from .samplers import ddim_eta


@node("sampler_example/ddim_eta", category="solvers", display_name="Stochastic DDIM (eta)")
def ddim_eta_solver(eta: Annotated[float, Field(ge=0, le=1)] = 1.0, seed: Seed = 0) -> SOLVER:
    """x_t = alpha_t x0 + sqrt(beta_t^2 - g^2) eps + g z with g = eta beta_t sqrt(1 - e^{-2h}):
    eta = 0 is deterministic DDIM, eta = 1 re-noises as much as the marginals allow. Seeded.
    Link into core/ode_solve's `method`."""
    return Solver("ddim_eta", ddim_eta, {"eta": eta, "seed": seed}, needs_path=True, samples_independent=False)
