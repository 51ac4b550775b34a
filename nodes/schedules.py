"""The noise schedules of pretrained models as paths and time grids in our time (t = 0 noise, t = 1 data).

Two families cover SD 1.x / 2.x / SDXL and SD3 / Flux:

DiscreteDDPMPath (kind "ddpm"). Training used N discrete levels with betas b_i (i = 0..N-1) and
    alphabar_i = prod_{j <= i} (1 - b_j); level i adds noise of ratio sigma_i = sqrt((1 - alphabar_i) / alphabar_i).
    We read the model timestep tau in [-1, N-1] as tau(t) = (1 - t) N - 1 and set sigma(tau) by linear
    interpolation between integer levels, with sigma_{-1} = 0 (clean data at t = 1). Then
        alpha_t = 1 / sqrt(1 + sigma^2),   beta_t = sigma / sqrt(1 + sigma^2)   (variance preserving),
        alpha'_t = -alpha^3 sigma sigma'_t,   beta'_t = alpha^3 sigma'_t,   sigma'_t = -N dsigma/dtau.
    At t = 0, alpha = sqrt(alphabar_{N-1}) > 0 (these schedules do not reach pure noise); like diffusers,
    sampling starts from x = eps anyway. On the integer levels this is exactly diffusers' schedule: DDIM
    (eta 0) and Euler-discrete steps equal our `ddim` solver on the grid `ddpm_grid` returns.

RectifiedFlowPath (kind "rectified_flow"). SD3 and Flux train x_s = (1 - s) x0 + s eps with s the noise
    level; with t = 1 - s this is CondOT (alpha_t = t, beta_t = 1 - t). Their network predicts
    eps - x0 = -dx/dt, which the backbone adapters negate. The path records the scheduler's shift so the
    time grid can reproduce it: s' = shift s / (1 + (shift - 1) s), or with resolution-dependent
    shifting s' = e^mu / (e^mu + 1/s - 1) where mu grows linearly with the number of image tokens.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch

from .paths import CondOTPath, GaussianPath

BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
Spacing = Literal["leading", "trailing", "linspace"]
FinalLevel = Literal["clean", "first"]


def ddpm_betas(num_train_timesteps: int, beta_start: float, beta_end: float, schedule: str) -> torch.Tensor:
    """b_i as diffusers computes them (float32): linear; scaled_linear = (linspace of sqrt b)^2;
    squaredcos_cap_v2 = 1 - abar(i+1)/abar(i) with abar(u) = cos^2((u/N + 0.008)/1.008 pi/2), capped at 0.999."""
    n = num_train_timesteps
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float32) ** 2
    if schedule == "squaredcos_cap_v2":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        return torch.tensor([min(1 - abar((i + 1) / n) / abar(i / n), 0.999) for i in range(n)], dtype=torch.float32)
    raise ValueError(f"beta_schedule {schedule!r} is not supported; use linear, scaled_linear or squaredcos_cap_v2")


class DiscreteDDPMPath(GaussianPath):
    """A discrete DDPM noise schedule read in continuous time (see the module docstring for the formulas).

    `timestep_spacing`, `steps_offset` and `final` only shape the sampling grid (`ddpm_grid`): which
    integer levels a scheduler visits for a number of steps, and whether the last step lands on clean
    data ("clean": sigma = 0, DDIM's set_alpha_to_one / Euler) or on level 0 ("first").
    """

    name = "ddpm"

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012,
                 beta_schedule: BetaSchedule = "scaled_linear", timestep_spacing: Spacing = "leading",
                 steps_offset: int = 1, final: FinalLevel = "first") -> None:
        if num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
        if timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"timestep_spacing {timestep_spacing!r}: use leading, trailing or linspace")
        if final not in ("clean", "first"):
            raise ValueError(f"final {final!r}: use clean or first")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start, self.beta_end, self.beta_schedule = float(beta_start), float(beta_end), beta_schedule
        self.timestep_spacing, self.steps_offset, self.final = timestep_spacing, int(steps_offset), final
        betas = ddpm_betas(self.num_train_timesteps, self.beta_start, self.beta_end, beta_schedule)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - self.alphas_cumprod) / self.alphas_cumprod).double().sqrt()
        self._knots = torch.cat([torch.zeros(1, dtype=torch.float64), sigmas])  # tau = -1, 0, ..., N-1

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The model's timestep tau = (1 - t) N - 1, in float64 (t = 1 -> -1, t = 0 -> N - 1)."""
        return (1 - t.double()) * self.num_train_timesteps - 1

    def time_of(self, tau: torch.Tensor | float) -> torch.Tensor:
        """Inverse of `timestep`: t = 1 - (tau + 1) / N."""
        return 1 - (torch.as_tensor(tau, dtype=torch.float64) + 1) / self.num_train_timesteps

    def _sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma, dsigma/dt) at t, float64: linear between the integer levels."""
        knots = self._knots.to(t.device)
        position = (self.timestep(t) + 1).clamp(0, self.num_train_timesteps)  # index into knots
        low = position.floor().clamp(max=self.num_train_timesteps - 1).long()
        slope = knots[low + 1] - knots[low]
        sigma = knots[low] + (position - low) * slope
        return sigma, -self.num_train_timesteps * slope

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        sigma, _ = self._sigma(t)
        return (1 / torch.sqrt(1 + sigma * sigma)).to(t.dtype)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        sigma, _ = self._sigma(t)
        return (sigma / torch.sqrt(1 + sigma * sigma)).to(t.dtype)

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        sigma, d_sigma = self._sigma(t)
        return (-sigma * d_sigma / (1 + sigma * sigma) ** 1.5).to(t.dtype)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        sigma, d_sigma = self._sigma(t)
        return (d_sigma / (1 + sigma * sigma) ** 1.5).to(t.dtype)

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The four above from one schedule lookup (the same formulas, so the same values)."""
        sigma, d_sigma = self._sigma(t)
        norm = 1 + sigma * sigma
        root, cube = torch.sqrt(norm), norm ** 1.5
        return ((1 / root).to(t.dtype), (sigma / root).to(t.dtype), (-sigma * d_sigma / cube).to(t.dtype),
                (d_sigma / cube).to(t.dtype))

    def config(self) -> dict[str, object]:
        return {"kind": self.name, "num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start,
                "beta_end": self.beta_end, "beta_schedule": self.beta_schedule,
                "timestep_spacing": self.timestep_spacing, "steps_offset": self.steps_offset, "final": self.final}


def ddpm_timesteps(path: DiscreteDDPMPath, steps: int) -> torch.Tensor:
    """The integer (or, for linspace, fractional) levels tau a diffusers scheduler visits, noisiest first.

    leading: (0, r, 2r, ...) reversed + steps_offset with r = N // steps; trailing: round(N, N - N/steps,
    ...) - 1; linspace: linspace(0, N - 1, steps) reversed (kept fractional, as Euler-discrete does).
    """
    n = path.num_train_timesteps
    if not 1 <= steps <= n:
        raise ValueError(f"steps must be between 1 and num_train_timesteps={n}, got {steps}")
    if path.timestep_spacing == "leading":
        ratio = n // steps
        taus = torch.arange(steps - 1, -1, -1, dtype=torch.float64) * ratio + path.steps_offset
    elif path.timestep_spacing == "trailing":
        taus = torch.round(torch.arange(n, 0, -n / steps, dtype=torch.float64)) - 1
    else:
        taus = torch.linspace(0, n - 1, steps, dtype=torch.float64).flip(0)
    return taus


def ddpm_grid(path: DiscreteDDPMPath, steps: int) -> torch.Tensor:
    """Times t_i = 1 - (tau_i + 1) / N of the scheduler's levels, then the final time: t = 1 (clean) or
    the time of level 0 ("first", where DDIM without set_alpha_to_one ends)."""
    taus = ddpm_timesteps(path, steps)
    final = torch.tensor([-1.0 if path.final == "clean" else 0.0], dtype=torch.float64)
    if float(taus[-1]) <= float(final[0]):
        taus = taus[:-1]  # a level at or below the end is the end itself
    return path.time_of(torch.cat([taus, final]))


class RectifiedFlowPath(CondOTPath):
    """CondOT (alpha_t = t, beta_t = 1 - t) with the flow-matching scheduler of SD3 / Flux recorded.

    shift: the static shift of the noise level (SD3: 3.0); with `dynamic` (Flux), mu = base_shift +
    (max_shift - base_shift) (tokens - base_tokens) / (max_tokens - base_tokens) for an image of `tokens`
    latent patches. `spacing`: "scheduler" = the scheduler's own linspace from its largest to its smallest
    training noise level (SD3's pipeline), "flux" = linspace(1, 1/steps, steps) (Flux's pipeline).
    """

    name = "rectified_flow"

    def __init__(self, shift: float = 1.0, dynamic: bool = False, base_shift: float = 0.5, max_shift: float = 1.15,
                 base_tokens: int = 256, max_tokens: int = 4096, spacing: Literal["scheduler", "flux"] = "scheduler",
                 num_train_timesteps: int = 1000) -> None:
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        if spacing not in ("scheduler", "flux"):
            raise ValueError(f"spacing {spacing!r}: use scheduler or flux")
        if max_tokens <= base_tokens:
            raise ValueError(f"need max_tokens > base_tokens, got {max_tokens}, {base_tokens}")
        self.shift, self.dynamic = float(shift), bool(dynamic)
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_tokens, self.max_tokens = int(base_tokens), int(max_tokens)
        self.spacing, self.num_train_timesteps = spacing, int(num_train_timesteps)

    def mu(self, tokens: int) -> float:
        """The resolution-dependent shift exponent, linear in the number of image tokens."""
        slope = (self.max_shift - self.base_shift) / (self.max_tokens - self.base_tokens)
        return self.base_shift + slope * (tokens - self.base_tokens)

    def config(self) -> dict[str, object]:
        return {"kind": self.name, "shift": self.shift, "dynamic": self.dynamic, "base_shift": self.base_shift,
                "max_shift": self.max_shift, "base_tokens": self.base_tokens, "max_tokens": self.max_tokens,
                "spacing": self.spacing, "num_train_timesteps": self.num_train_timesteps}


def static_shift(s: torch.Tensor, shift: float) -> torch.Tensor:
    """s' = shift s / (1 + (shift - 1) s): more steps at high noise for shift > 1."""
    return shift * s / (1 + (shift - 1) * s)


def exponential_shift(s: torch.Tensor, mu: float) -> torch.Tensor:
    """s' = e^mu / (e^mu + 1/s - 1) (Flux's resolution-dependent shift; s = 0 stays 0)."""
    return torch.where(s > 0, math.exp(mu) / (math.exp(mu) + 1 / s.clamp_min(1e-300) - 1), torch.zeros_like(s))


def flow_grid(path: RectifiedFlowPath, steps: int, tokens: int | None = None) -> torch.Tensor:
    """The scheduler's noise levels s_0 > ... > s_{steps-1}, shifted, then s = 0; as times t = 1 - s.

    `tokens` (the latent's patch count, (H/2)(W/2)) is required when the path shifts dynamically."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    n = path.num_train_timesteps
    if path.spacing == "flux":
        levels = torch.linspace(1.0, 1.0 / steps, steps, dtype=torch.float64)
    else:
        smallest = 1.0 / n if path.dynamic else float(static_shift(torch.tensor(1.0 / n), path.shift))
        levels = torch.linspace(n, smallest * n, steps, dtype=torch.float64) / n
    if path.dynamic:
        if tokens is None:
            raise ValueError("this model shifts its schedule by image size: link the latents (or give the size)")
        levels = exponential_shift(levels, path.mu(tokens))
    else:
        levels = static_shift(levels, path.shift)
    return 1 - torch.cat([levels, torch.zeros(1, dtype=torch.float64)])


def model_grid(path: GaussianPath, steps: int, tokens: int | None = None) -> torch.Tensor:
    """The grid a pretrained model's own scheduler would use, for the paths that record one."""
    if isinstance(path, DiscreteDDPMPath):
        return ddpm_grid(path, steps)
    if isinstance(path, RectifiedFlowPath):
        return flow_grid(path, steps, tokens)
    raise ValueError(f"path {path!r} records no scheduler; use a uniform or shifted time grid instead")


def path_from_scheduler(config: dict[str, Any]) -> tuple[GaussianPath, str]:
    """(path, prediction) from a diffusers scheduler_config.json; prediction in our names
    (epsilon, v, x0; "velocity" for flow matching, whose sign the backbone adapters fix)."""
    name = str(config.get("_class_name", ""))
    if name.startswith("FlowMatch"):
        for flag in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas"):
            if config.get(flag):
                raise ValueError(f"{name}: {flag} is not supported yet")
        path = RectifiedFlowPath(
            shift=float(config.get("shift", 1.0)), dynamic=bool(config.get("use_dynamic_shifting", False)),
            base_shift=float(config.get("base_shift") or 0.5), max_shift=float(config.get("max_shift") or 1.15),
            base_tokens=int(config.get("base_image_seq_len") or 256),
            max_tokens=int(config.get("max_image_seq_len") or 4096),
            spacing="flux" if config.get("use_dynamic_shifting") else "scheduler",
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)))
        return path, "velocity"
    if "beta_start" not in config and "beta_schedule" not in config:
        raise ValueError(f"scheduler {name or '(no _class_name)'} is neither a DDPM-style nor a flow-matching "
                         "scheduler")
    if config.get("trained_betas") is not None:
        raise ValueError(f"{name}: trained_betas is not supported yet")
    euler_like = name.startswith(("Euler", "Heun", "DPM", "KDPM", "LMS"))
    path = DiscreteDDPMPath(
        num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
        beta_start=float(config.get("beta_start", 0.0001)), beta_end=float(config.get("beta_end", 0.02)),
        beta_schedule=config.get("beta_schedule", "linear"),
        timestep_spacing=config.get("timestep_spacing", "leading"), steps_offset=int(config.get("steps_offset", 0)),
        final="clean" if euler_like or config.get("set_alpha_to_one", True) else "first")
    prediction = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}.get(
        str(config.get("prediction_type", "epsilon")))
    if prediction is None:
        raise ValueError(f"{name}: prediction_type {config.get('prediction_type')!r} is not supported")
    return path, prediction


BUILTIN_SCHEDULE_PATHS: tuple[GaussianPath, ...] = (DiscreteDDPMPath(), RectifiedFlowPath())
"""Registered as ("path", name) components, so checkpoints and core/path can name them."""
