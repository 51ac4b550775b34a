"""Nodes for probability paths: pick a registered path, set a parametrised one, sample x_t and targets."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from nodegraph import Choice, node

from .annotations import Unit
from .parameterization import DEFAULT_CLIP, Prediction, convert
from .paths import PolynomialPath, VEPath, VPPath
from .schedules import BetaSchedule, DiscreteDDPMPath, FinalLevel, Spacing
from .sockets import PATH, TENSOR

_V1_PARAMETERS = {"beta_min": 0.1, "beta_max": 20.0, "n": 2.0, "sigma_min": 0.01, "sigma_max": 80.0}
_V1_USES = {"vp": ("beta_min", "beta_max", "core/vp_path"), "polynomial": ("n", "core/polynomial_path"),
            "ve": ("sigma_min", "sigma_max", "core/ve_path")}


def _path_v1_to_v2(inputs: dict[str, Any]) -> dict[str, Any]:
    """v1 showed every kind's parameters on one node; v2 picks a kind, and parametrised kinds have their
    own nodes. Parameters at their defaults (all shipped workflows) are dropped; others cannot be kept."""
    kind = inputs.get("kind", "cond_ot")
    *used, replacement = _V1_USES.get(kind, ("",))
    for name, default in _V1_PARAMETERS.items():
        value = inputs.pop(name, default)
        if name in used and float(value) != default:
            raise ValueError(f"{kind} with {name}={value}: replace this node by {replacement}")
    return inputs


@node("core/path", version=2, migrations={1: _path_v1_to_v2}, category="paths", display_name="Probability path")
def path_node(kind: Annotated[PATH, Choice("path")] = "cond_ot") -> PATH:
    """A registered Gaussian path x_t = alpha_t z + beta_t eps, with its default parameters. cond_ot: (t, 1-t);
    cosine: (sin, cos)(pi t/2); linear_vp: (t, sqrt(1-t^2)); vp, polynomial, ve: see their own nodes to
    set parameters. Plugins add kinds to this list."""
    return kind


@node("core/vp_path", category="paths", display_name="VP path (beta_min, beta_max)")
def vp_path(beta_min: Annotated[float, Field(ge=0, le=100)] = 0.1,
            beta_max: Annotated[float, Field(ge=0, le=100)] = 20.0) -> PATH:
    """VP-SDE path with noise rate b(s) = beta_min + s (beta_max - beta_min), s = 1 - t:
    alpha_t = exp(-T(s)/2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2, beta_t = sqrt(1 - alpha_t^2)."""
    return VPPath(beta_min, beta_max)


@node("core/polynomial_path", category="paths", display_name="Polynomial path (n)")
def polynomial_path(n: Annotated[float, Field(gt=0, le=16)] = 2.0) -> PATH:
    """alpha_t = t^n, beta_t = 1 - t^n (n = 1 is CondOT)."""
    return PolynomialPath(n)


@node("core/ve_path", category="paths", display_name="VE path (sigma_min, sigma_max)")
def ve_path(sigma_min: Annotated[float, Field(gt=0, le=1000)] = 0.01,
            sigma_max: Annotated[float, Field(gt=0, le=1000)] = 80.0) -> PATH:
    """Variance exploding: alpha_t = 1, beta_t = sigma_min^t sigma_max^(1-t); start from noise of std sigma_max."""
    return VEPath(sigma_min, sigma_max)


@node("core/path_sample", category="paths", display_name="Sample x_t")
def path_sample(path: PATH, z: TENSOR, eps: TENSOR, t: Unit = 0.5) -> TENSOR:
    """x_t = alpha_t z + beta_t eps (z data, eps standard noise of the same shape)."""
    return path.sample(z, eps.to(z), t)


@node("core/path_target", category="paths", display_name="Target velocity")
def path_target(path: PATH, z: TENSOR, eps: TENSOR, t: Unit = 0.5) -> TENSOR:
    """Conditional target field u_t(x|z) = alpha'_t z + beta'_t eps."""
    return path.target_velocity(z, eps.to(z), t)


@node("core/convert_prediction", category="paths", display_name="Convert prediction")
def convert_prediction(path: PATH, prediction: TENSOR, x: TENSOR, t: Unit = 0.5,
                       source: Prediction = "epsilon", target: Prediction = "velocity",
                       clip: Annotated[float, Field(gt=0, le=0.1)] = DEFAULT_CLIP) -> TENSOR:
    """Turn a `source` prediction at (x, t) into a `target` one on the path: x = alpha x0 + beta eps,
    score = -eps/beta, velocity = alpha' x0 + beta' eps (divisions by alpha, beta use max(., clip))."""
    return convert(prediction, source, target, x, t, path, clip)



@node("core/ddpm_path", category="paths", display_name="DDPM discrete schedule")
def ddpm_path(num_train_timesteps: Annotated[int, Field(ge=2, le=100_000)] = 1000,
              beta_start: Annotated[float, Field(gt=0, lt=1)] = 0.00085,
              beta_end: Annotated[float, Field(gt=0, lt=1)] = 0.012,
              beta_schedule: BetaSchedule = "scaled_linear", timestep_spacing: Spacing = "leading",
              steps_offset: Annotated[int, Field(ge=0, le=1000)] = 1, final: FinalLevel = "first") -> PATH:
    """A discrete DDPM schedule (SD 1.x/2.x/SDXL defaults) in continuous time: tau = (1 - t) N - 1,
    sigma(tau) = sqrt((1 - abar)/abar) linear between levels, alpha = 1/sqrt(1 + sigma^2), beta = sigma alpha.
    Spacing, offset and final level shape core/model_time_grid like the diffusers scheduler."""
    return DiscreteDDPMPath(num_train_timesteps, beta_start, beta_end, beta_schedule, timestep_spacing, steps_offset,
                            final)
