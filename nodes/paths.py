"""Gaussian probability paths p_t(x|z) = N(alpha_t z, beta_t^2 I), t = 0 noise, t = 1 data.

Every path gives alpha_t, beta_t and their time derivatives; from those it samples
x_t = alpha_t z + beta_t eps and the conditional target velocity u_t(x|z) = alpha'_t z + beta'_t eps.
(VEPath, alpha = 1, is the one exception to alpha_0 = 0, beta_0 = 1: see its docstring.)
Methods take a tensor t of any shape and work elementwise; `sample` / `target_velocity` take t of
shape (B,) (or a scalar) and broadcast it over the remaining dims of z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from .broadcast import expand_time


class GaussianPath:
    """Base class: subclasses define alpha, beta, d_alpha, d_beta (elementwise on a tensor t), a
    unique `name`, and, when they have parameters, `config()` returning them as keyword arguments of
    the constructor (so checkpoints can record a path and rebuild it). Register an instance with the
    default parameters as the component ("path", name) to make the kind selectable everywhere."""

    name = "gaussian"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, beta_t, alpha'_t, beta'_t) in one call: what every conversion between predictions needs.
        Paths whose four share work (a schedule lookup) override it to do that work once."""
        return self.alpha(t), self.beta(t), self.d_alpha(t), self.d_beta(t)

    def sample(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """x_t = alpha_t z + beta_t eps."""
        tt = expand_time(t, z)
        return self.alpha(tt) * z + self.beta(tt) * eps

    def target_velocity(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """u_t(x|z) = alpha'_t z + beta'_t eps (the conditional flow-matching target)."""
        tt = expand_time(t, z)
        return self.d_alpha(tt) * z + self.d_beta(tt) * eps

    def config(self) -> dict[str, object]:
        """Enough to rebuild the path with `path_from_config` (stored in checkpoint metadata)."""
        return {"kind": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GaussianPath) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class CondOTPath(GaussianPath):
    """Conditional optimal transport: alpha_t = t, beta_t = 1 - t (straight lines, u = z - eps)."""

    name = "cond_ot"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - t

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.ones_like(t)


class CosinePath(GaussianPath):
    """Cosine (trigonometric, variance preserving): alpha_t = sin(pi t / 2), beta_t = cos(pi t / 2)."""

    name = "cosine"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(0.5 * math.pi * t)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return torch.cos(0.5 * math.pi * t).clamp_min(0)

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class LinearVPPath(GaussianPath):
    """Linear variance preserving: alpha_t = t, beta_t = sqrt(1 - t^2).

    beta'_t = -t / sqrt(1 - t^2) diverges at t = 1; beta is clamped at 1e-12 inside the square root's
    derivative so the value stays finite (solvers never evaluate the field at t = 1 exactly).
    """

    name = "linear_vp"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((1 - t * t).clamp_min(0))

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return -t / self.beta(t).clamp_min(1e-12)


class VPPath(GaussianPath):
    """Variance preserving path of the VP-SDE with a linear noise rate, run in our time direction.

    With diffusion time s = 1 - t and rate b(s) = beta_min + s (beta_max - beta_min):
    alpha_t = exp(-T(s) / 2), T(s) = beta_min s + (beta_max - beta_min) s^2 / 2, beta_t = sqrt(1 - alpha_t^2);
    alpha'_t = alpha_t b(s) / 2 and beta'_t = -alpha_t alpha'_t / beta_t.
    Note alpha_0 = exp(-T(1)/2) is small but not exactly 0 (about 0.0066 for the defaults 0.1, 20).
    """

    name = "vp"

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if beta_min < 0 or beta_max < beta_min:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min}, {beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def _integral(self, s: torch.Tensor) -> torch.Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s * s

    def _rate(self, s: torch.Tensor) -> torch.Tensor:
        return self.beta_min + s * (self.beta_max - self.beta_min)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * self._integral(1 - t))

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((-torch.expm1(-self._integral(1 - t))).clamp_min(0))

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * self._rate(1 - t) * self.alpha(t)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.beta(t).clamp_min(1e-12)

    def config(self) -> dict[str, object]:
        return {"kind": self.name, "beta_min": self.beta_min, "beta_max": self.beta_max}


class PolynomialPath(GaussianPath):
    """Polynomial convex path: alpha_t = t^n, beta_t = 1 - t^n (n = 1 is CondOT)."""

    name = "polynomial"

    def __init__(self, n: float = 2.0) -> None:
        if n <= 0:
            raise ValueError(f"exponent n must be positive, got {n}")
        self.n = float(n)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return t.clamp_min(0) ** self.n

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return 1 - t.clamp_min(0) ** self.n

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.n * t.clamp_min(0) ** (self.n - 1)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return -self.d_alpha(t)

    def config(self) -> dict[str, object]:
        return {"kind": self.name, "n": self.n}


class VEPath(GaussianPath):
    """Variance exploding: alpha_t = 1, beta_t = sigma_min^t sigma_max^(1 - t) (geometric noise levels).

    It does not meet alpha_0 = 0, beta_0 = 1: start solvers from N(0, sigma_max^2 I) (core/noise std)
    and expect beta_1 = sigma_min > 0 of residual noise. beta'_t = beta_t ln(sigma_min / sigma_max).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 80.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(t)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_max * torch.exp(t * math.log(self.sigma_min / self.sigma_max))

    def d_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(t)

    def d_beta(self, t: torch.Tensor) -> torch.Tensor:
        return math.log(self.sigma_min / self.sigma_max) * self.beta(t)

    def config(self) -> dict[str, object]:
        return {"kind": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


BUILTIN_PATHS: tuple[GaussianPath, ...] = (CondOTPath(), CosinePath(), LinearVPPath(), VPPath(), PolynomialPath(),
                                           VEPath())
"""Registered as ("path", name) components by the built-in library, with default parameters."""


def path_from_config(config: Mapping[str, object], kinds: Mapping[str, GaussianPath] | None = None) -> GaussianPath:
    """Inverse of `GaussianPath.config()` (e.g. from a checkpoint's metadata): the registered path of
    that kind (`kinds`: the registry's paths; default the built-in ones) rebuilt with the parameters."""
    kinds = kinds if kinds is not None else {p.name: p for p in BUILTIN_PATHS}
    kind = str(config.get("kind"))
    if kind not in kinds:
        raise ValueError(f"unknown path kind {kind!r}; registered: {sorted(kinds)}")
    params = {k: v for k, v in config.items() if k != "kind"}
    return type(kinds[kind])(**params) if params else kinds[kind]
