"""Gaussian-mixture toy data with exact (closed-form) fields: references for tests and teaching.

Data z ~ sum_k w_k N(m_k, diag(s_k^2)); each component k has a class label c_k. Under a Gaussian path
x_t = alpha z + beta eps, component k's marginal is N(alpha m_k, diag(v_k)), v_k = alpha^2 s_k^2 + beta^2.
With responsibilities r_k(x, t) proportional to w_k N(x; alpha m_k, v_k):
    E[z | x]   = sum_k r_k (m_k + alpha s_k^2 / v_k (x - alpha m_k))
    E[eps | x] = sum_k r_k (beta / v_k (x - alpha m_k))
    u_t(x)     = alpha' E[z | x] + beta' E[eps | x],  score = sum_k r_k (-(x - alpha m_k) / v_k)
    p_t(y | x) = sum_{k: c_k = y} r_k.
Conditioning on class y restricts the sum to components with c_k = y (null label = num_classes: all).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, NamedTuple

import torch
from pydantic import Field

from nodegraph import Context, node

from .annotations import Seed
from .conditioning import Condition
from .fields import VectorField
from .paths import GaussianPath
from .sockets import CLASSIFIER, DATASET, MIXTURE, PATH, TENSOR, VECTOR_FIELD


class GaussianMixture:
    """Means (K, D), per-axis stds (K, D) (isotropic: equal columns), weights (K,), labels (K,)."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, num_classes: int | None = None) -> None:
        means = torch.as_tensor(means, dtype=torch.float64)
        k, d = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        stds = stds.reshape(k, 1).expand(k, d) if stds.numel() == k and d != 1 else stds.reshape(k, d)
        if bool((stds <= 0).any()):
            raise ValueError("component stds must be positive")
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None \
            else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (k,) or bool((weights <= 0).any()):
            raise ValueError(f"need {k} positive weights")
        labels = torch.arange(k) if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.means, self.stds = means, stds.contiguous()
        self.weights = weights / weights.sum()
        self.labels = labels
        self.num_classes = int(num_classes if num_classes is not None else int(labels.max()) + 1)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(points (n, D), class labels (n,), component ids (n,))."""
        components = torch.multinomial(self.weights, n, replacement=True, generator=_cpu(generator))
        noise = torch.randn(n, self.dim, generator=_cpu(generator), dtype=torch.float64)
        points = self.means[components] + self.stds[components] * noise
        return points.to(device, dtype), self.labels[components].to(device), components.to(device)

    def class_mean(self, label: int) -> torch.Tensor:
        mask = self.labels == label
        w = self.weights[mask]
        return (w[:, None] * self.means[mask]).sum(0) / w.sum()


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """Mixture sampling draws on the CPU so a seed gives the same points on every device."""
    if generator is None or generator.device.type == "cpu":
        return generator
    cpu = torch.Generator()
    cpu.manual_seed(generator.initial_seed())
    return cpu


class _Posterior(NamedTuple):
    log_joint: torch.Tensor  # (B, K): log w_k + log N(x; alpha m_k, v_k)
    diff: torch.Tensor  # (B, K, D): x - alpha m_k
    var: torch.Tensor  # (B, K, D): v_k


def _posterior(mixture: GaussianMixture, path: GaussianPath, x: torch.Tensor, t: torch.Tensor) -> _Posterior:
    means = mixture.means.to(x)
    stds = mixture.stds.to(x)
    tt = t.to(x).reshape(-1, 1, 1)
    alpha, beta = path.alpha(tt), path.beta(tt)
    var = alpha * alpha * stds[None] ** 2 + beta * beta
    diff = x[:, None, :] - alpha * means[None]
    log_normal = -0.5 * (diff * diff / var + torch.log(2 * math.pi * var)).sum(-1)
    return _Posterior(mixture.weights.to(x).log()[None] + log_normal, diff, var)


class GMMField(VectorField):
    """The exact marginal velocity of a Gaussian mixture under `path`; class-conditional when
    cond.labels is given (label = num_classes, or no cond: the unconditional marginal)."""

    def __init__(self, mixture: GaussianMixture, path: GaussianPath) -> None:
        self.mixture = mixture
        self.path = path

    def responsibilities(self, post: _Posterior, cond: Condition | None) -> torch.Tensor:
        log_joint = post.log_joint
        if cond is not None and cond.labels is not None:
            labels = cond.labels.to(log_joint.device).reshape(-1, 1).expand(log_joint.shape[0], 1)
            component_labels = self.mixture.labels.to(log_joint.device)[None]
            keep = (component_labels == labels) | (labels == self.mixture.num_classes)
            log_joint = log_joint.masked_fill(~keep, -math.inf)
        return torch.softmax(log_joint, dim=-1)

    def x0_eps(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior means E[z | x_t = x] and E[eps | x_t = x]."""
        post = _posterior(self.mixture, self.path, x, t)
        r = self.responsibilities(post, cond)[..., None]
        tt = t.to(x).reshape(-1, 1, 1)
        alpha, beta = self.path.alpha(tt), self.path.beta(tt)
        stds = self.mixture.stds.to(x)[None]
        x0 = (r * (self.mixture.means.to(x)[None] + alpha * stds * stds / post.var * post.diff)).sum(1)
        eps = (r * (beta / post.var * post.diff)).sum(1)
        return x0, eps

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        x0, eps = self.x0_eps(x, t, cond)
        tt = t.to(x).reshape(-1, 1)
        return self.path.d_alpha(tt) * x0 + self.path.d_beta(tt) * eps

    def exact_score(self, x: torch.Tensor, t: torch.Tensor, cond: Condition | None = None) -> torch.Tensor:
        """grad_x log p_t(x | cond) = sum_k r_k (-(x - alpha m_k) / v_k), finite for all t."""
        post = _posterior(self.mixture, self.path, x, t)
        r = self.responsibilities(post, cond)[..., None]
        return (r * (-post.diff / post.var)).sum(1)


class GMMClassifier(torch.nn.Module):
    """The exact noisy-time classifier: logits_y = log sum_{k: c_k = y} w_k N(x; alpha m_k, v_k)."""

    def __init__(self, mixture: GaussianMixture, path: GaussianPath) -> None:
        super().__init__()
        self.mixture = mixture
        self.path = path
        self.num_classes = mixture.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        log_joint = _posterior(self.mixture, self.path, x, t).log_joint
        onehot = self.mixture.labels.to(x.device)[None, :] == torch.arange(self.num_classes, device=x.device)[:, None]
        masked = log_joint[:, None, :].masked_fill(~onehot[None], -math.inf)
        return torch.logsumexp(masked, dim=-1)


def preset_mixture(preset: str, components: int, radius: float, std: float, aspect: float,
                   num_classes: int) -> GaussianMixture:
    """ring: K means on a circle; grid: a ceil(sqrt K)^2 square grid in [-radius, radius]^2 (K first);
    line: K means on the x axis. Stds (std, std * aspect); label of component k is k mod num_classes."""
    if preset == "ring":
        angle = 2 * math.pi * torch.arange(components, dtype=torch.float64) / components
        means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    elif preset == "grid":
        side = math.ceil(math.sqrt(components))
        axis = torch.linspace(-radius, radius, side, dtype=torch.float64) if side > 1 else torch.zeros(1)
        means = torch.cartesian_prod(axis, axis)[:components].to(torch.float64)
    elif preset == "line":
        xs = torch.linspace(-radius, radius, components, dtype=torch.float64) if components > 1 else torch.zeros(1)
        means = torch.stack([xs, torch.zeros_like(xs)], dim=1)
    else:
        raise ValueError(f"unknown preset {preset!r}")
    stds = torch.tensor([[std, std * aspect]], dtype=torch.float64).expand(components, 2)
    labels = torch.arange(components) % num_classes
    return GaussianMixture(means, stds, labels=labels, num_classes=min(num_classes, components))


@node("core/toy_mixture", category="toy", display_name="Toy Gaussian mixture", outputs=("mixture",))
def toy_mixture(preset: Literal["ring", "grid", "line"] = "ring",
                components: Annotated[int, Field(ge=1, le=64)] = 8,
                radius: Annotated[float, Field(gt=0, le=100)] = 4.0,
                std: Annotated[float, Field(gt=0, le=10)] = 0.4,
                aspect: Annotated[float, Field(gt=0, le=10)] = 1.0,
                num_classes: Annotated[int, Field(ge=1, le=64)] = 4) -> MIXTURE:
    """A 2-D Gaussian mixture with equal weights; component k has std (std, std * aspect) and class
    k mod num_classes (null label for CFG = num_classes)."""
    return preset_mixture(preset, components, radius, std, aspect, num_classes)


class ToySamples(NamedTuple):
    samples: TENSOR
    dataset: DATASET


@node("core/toy_sample", category="toy", display_name="Sample toy mixture")
def toy_sample(ctx: Context, mixture: MIXTURE, n: Annotated[int, Field(ge=1, le=1_000_000)] = 2000,
               seed: Seed = 0) -> ToySamples:
    """n exact draws from the mixture: points (n, 2) and a labelled DATASET for training."""
    from .data.dataset import Dataset

    points, labels, _ = mixture.sample(n, ctx.generator(seed, device="cpu"), ctx.device)
    return ToySamples(points, Dataset(points, labels, num_classes=mixture.num_classes, name="toy_mixture"))


@node("core/toy_field", category="toy", display_name="Exact mixture field")
def toy_field(mixture: MIXTURE, path: PATH) -> VECTOR_FIELD:
    """The closed-form marginal velocity u_t(x|y) = alpha' E[z|x, y] + beta' E[eps|x, y] of the mixture
    (class-conditional through cond.labels; null label = num_classes gives the unconditional field)."""
    return GMMField(mixture, path)


@node("core/toy_classifier", category="toy", display_name="Exact mixture classifier")
def toy_classifier(mixture: MIXTURE, path: PATH) -> CLASSIFIER:
    """The exact p_t(y|x) of the mixture under the path as a classifier(x, t) -> logits module."""
    return GMMClassifier(mixture, path)
