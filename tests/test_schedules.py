"""Pretrained models' schedules in our time: the DDPM path against its closed form and against diffusers'
DDIM / Euler-discrete schedulers, the rectified-flow grids against FlowMatchEuler, and v-prediction."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.parameterization import convert, from_x0_eps, to_x0_eps
from nodes.paths import CondOTPath
from nodes.schedules import (
    DiscreteDDPMPath,
    RectifiedFlowPath,
    ddpm_grid,
    ddpm_timesteps,
    flow_grid,
    model_grid,
    path_from_scheduler,
)

SD = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
      "steps_offset": 1}


def test_ddpm_path_is_the_closed_form_on_integer_levels():
    path = DiscreteDDPMPath()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    for level in (0, 1, 500, 999):
        t = path.time_of(level)
        assert float(path.timestep(t)) == pytest.approx(level, abs=1e-9)
        assert float(path.alpha(t)) == pytest.approx(math.sqrt(abar[level]), rel=1e-6)
        # rel 1e-4: abar is float32 as in diffusers, and 1 - abar_0 = 0.00085 keeps ~4 digits of it
        assert float(path.beta(t)) == pytest.approx(math.sqrt(1 - abar[level]), rel=1e-4)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert float(path.alpha(one)) == 1.0 and float(path.beta(one)) == 0.0  # clean data at t = 1


def test_ddpm_path_derivatives_match_finite_differences_between_levels():
    path = DiscreteDDPMPath()
    t = torch.tensor([0.1234, 0.50042, 0.98765], dtype=torch.float64)  # away from level boundaries
    h = 1e-7
    for value, derivative in ((path.alpha, path.d_alpha), (path.beta, path.d_beta)):
        numeric = (value(t + h) - value(t - h)) / (2 * h)
        torch.testing.assert_close(derivative(t), numeric, rtol=1e-5, atol=1e-8)
    assert torch.allclose(path.alpha(t) ** 2 + path.beta(t) ** 2, torch.ones_like(t))  # variance preserving


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("steps", [1, 7, 50])
def test_ddpm_grid_visits_the_ddim_schedulers_levels(spacing, steps):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**SD, timestep_spacing=spacing, set_alpha_to_one=False, clip_sample=False)
    scheduler.set_timesteps(steps)
    path, prediction = path_from_scheduler({**scheduler.config, "_class_name": "DDIMScheduler"})
    grid = ddpm_grid(path, steps)
    assert prediction == "epsilon" and path.final == "first"
    torch.testing.assert_close(path.timestep(grid[:-1]), scheduler.timesteps.double(), atol=1e-9, rtol=0)
    abar = path.alpha(grid) ** 2
    torch.testing.assert_close(abar[:-1], scheduler.alphas_cumprod[scheduler.timesteps].double(), atol=1e-7, rtol=0)
    assert float(abar[-1]) == pytest.approx(float(scheduler.final_alpha_cumprod), abs=1e-7)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
def test_ddpm_grid_has_the_euler_schedulers_sigmas(spacing):
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(**SD, timestep_spacing=spacing)
    scheduler.set_timesteps(9)
    path, _ = path_from_scheduler({**scheduler.config, "_class_name": "EulerDiscreteScheduler"})
    grid = ddpm_grid(path, 9)
    sigmas = path.beta(grid) / path.alpha(grid)
    torch.testing.assert_close(sigmas, scheduler.sigmas.double(), atol=2e-6, rtol=1e-6)
    assert float(grid[-1]) == 1.0 and bool((grid[1:] > grid[:-1]).all())


def test_flow_grids_equal_flow_match_euler_for_sd3_and_flux():
    import numpy as np
    from diffusers import FlowMatchEulerDiscreteScheduler

    sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sd3.set_timesteps(7)
    path, prediction = path_from_scheduler({**sd3.config, "_class_name": "FlowMatchEulerDiscreteScheduler"})
    assert prediction == "velocity" and isinstance(path, RectifiedFlowPath) and path == RectifiedFlowPath(shift=3.0)
    torch.testing.assert_close(1 - flow_grid(path, 7), sd3.sigmas.double(), atol=1e-6, rtol=0)

    flux = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)
    path, _ = path_from_scheduler({**flux.config, "_class_name": "FlowMatchEulerDiscreteScheduler"})
    tokens = 64 * 64
    flux.set_timesteps(5, sigmas=np.linspace(1.0, 1 / 5, 5), mu=path.mu(tokens))
    torch.testing.assert_close(1 - model_grid(path, 5, tokens), flux.sigmas.double(), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="image size"):
        model_grid(path, 5)


def test_rectified_flow_is_cond_ot():
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    flow, ot = RectifiedFlowPath(shift=3.0), CondOTPath()
    for name in ("alpha", "beta", "d_alpha", "d_beta"):
        torch.testing.assert_close(getattr(flow, name)(t), getattr(ot, name)(t))


def test_v_prediction_converts_exactly_on_any_path():
    torch.manual_seed(0)
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    for path in (DiscreteDDPMPath(), CondOTPath()):
        t = torch.tensor([0.2, 0.4, 0.6, 0.8])
        a, b = path.alpha(t)[:, None], path.beta(t)[:, None]
        x = a * x0 + b * eps
        v = a * eps - b * x0  # Salimans & Ho
        torch.testing.assert_close(from_x0_eps(x0, eps, "v", x, t, path), v)
        got_x0, got_eps = to_x0_eps(v, "v", x, t, path)
        torch.testing.assert_close(got_x0, x0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_eps, eps, atol=1e-5, rtol=1e-5)
        velocity = path.d_alpha(t)[:, None] * x0 + path.d_beta(t)[:, None] * eps
        torch.testing.assert_close(convert(v, "v", "velocity", x, t, path), velocity, atol=1e-4, rtol=1e-4)


def test_scheduler_configs_that_cannot_be_followed_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        path_from_scheduler({"_class_name": "DDIMScheduler", **SD, "prediction_type": "flow"})
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        path_from_scheduler({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True})
    with pytest.raises(ValueError, match="neither"):
        path_from_scheduler({"_class_name": "Mystery"})
    with pytest.raises(ValueError, match="steps"):
        ddpm_timesteps(DiscreteDDPMPath(), 0)


def test_ddpm_path_round_trips_through_its_config(builtin_registry):
    from nodes.paths import path_from_config

    path = DiscreteDDPMPath(beta_schedule="linear", beta_start=1e-4, beta_end=0.02, timestep_spacing="trailing",
                            steps_offset=0, final="clean")
    kinds = {name: builtin_registry.component("path", name) for name in builtin_registry.component_names("path")}
    assert path_from_config(path.config(), kinds) == path
    flow = RectifiedFlowPath(dynamic=True, spacing="flux")
    assert path_from_config(flow.config(), kinds) == flow
