"""Paths, exact parameterization conversions and the closed-form Gaussian-mixture fields."""

import math

import pytest
import torch

from nodegraph import Context
from nodes.conditioning import Condition
from nodes.field_nodes import model_field
from nodes.fields import ModelField
from nodes.parameterization import (
    PREDICTIONS,
    convert,
    guidance_coefficient,
    score_to_velocity,
)
from nodes.path_nodes import convert_prediction
from nodes.paths import (
    BUILTIN_PATHS,
    CondOTPath,
    CosinePath,
    LinearVPPath,
    PolynomialPath,
    VEPath,
    VPPath,
    path_from_config,
)
from nodes.toy import GaussianMixture, GMMClassifier, GMMField, preset_mixture

STANDARD = [CondOTPath(), CosinePath(), LinearVPPath(), VPPath(0.1, 20.0), PolynomialPath(2.0), PolynomialPath(0.5)]
PATHS = [*STANDARD, VEPath(0.01, 80.0)]
IDS = [repr(p) for p in PATHS]


def mixture() -> GaussianMixture:
    means = torch.tensor([[-2.0, 0.5], [1.5, 1.0], [0.5, -2.0]])
    stds = torch.tensor([[0.3, 0.6], [0.5, 0.5], [0.8, 0.2]])
    return GaussianMixture(means, stds, torch.tensor([0.2, 0.5, 0.3]), labels=torch.tensor([0, 1, 0]))


def closed_form(kind: str, t: float, beta_min=0.1, beta_max=20.0, n=2.0, sigma_min=0.01, sigma_max=80.0):
    """(alpha_t, beta_t) written out again here, independently of nodes.paths, from the formulas of the docs."""
    if kind == "cond_ot":
        return t, 1 - t
    if kind == "cosine":
        return math.sin(math.pi * t / 2), math.cos(math.pi * t / 2)
    if kind == "linear_vp":
        return t, math.sqrt(1 - t * t)
    if kind == "vp":
        s = 1 - t
        alpha = math.exp(-(beta_min * s + (beta_max - beta_min) * s * s / 2) / 2)
        return alpha, math.sqrt(1 - alpha * alpha)
    if kind == "polynomial":
        return t**n, 1 - t**n
    if kind == "ve":
        return 1.0, sigma_min**t * sigma_max ** (1 - t)
    raise KeyError(kind)


CLOSED_FORM_CASES = [("cond_ot", {}), ("cosine", {}), ("linear_vp", {}), ("vp", {}),
                     ("vp", {"beta_min": 0.5, "beta_max": 5.0}), ("polynomial", {}), ("polynomial", {"n": 0.5}),
                     ("polynomial", {"n": 3.0}), ("ve", {}), ("ve", {"sigma_min": 0.1, "sigma_max": 10.0})]


def test_closed_form_cases_cover_every_path_kind():
    assert {kind for kind, _ in CLOSED_FORM_CASES} == {path.name for path in BUILTIN_PATHS}


@pytest.mark.parametrize("kind, params", CLOSED_FORM_CASES, ids=[f"{k}{p or ''}" for k, p in CLOSED_FORM_CASES])
def test_schedules_match_closed_forms_at_interior_times(kind, params):
    """Interior times catch a schedule swapped for another one that still meets the boundary values."""
    path = path_from_config({"kind": kind, **params})
    times = [0.1, 0.3, 0.5, 0.7, 0.9]
    t = torch.tensor(times, dtype=torch.float64)
    expected = [closed_form(kind, ti, **params) for ti in times]
    alpha = torch.tensor([a for a, _ in expected], dtype=torch.float64)
    beta = torch.tensor([b for _, b in expected], dtype=torch.float64)
    torch.testing.assert_close(path.alpha(t).expand_as(t).double(), alpha, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(path.beta(t).expand_as(t).double(), beta, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_derivatives_match_autograd(path):
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    d_alpha, d_beta = (torch.func.grad(lambda s, f=f: f(s).sum())(t) for f in (path.alpha, path.beta))
    torch.testing.assert_close(path.d_alpha(t), d_alpha, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.d_beta(t), d_beta, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", STANDARD, ids=IDS[:-1])
def test_boundary_values(path):
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    alpha, beta = path.alpha(ends), path.beta(ends)
    assert float(alpha[1]) == pytest.approx(1.0) and float(beta[1]) == pytest.approx(0.0, abs=1e-7)
    assert float(beta[0]) == pytest.approx(1.0, abs=1e-4)
    assert float(alpha[0]) < 0.01  # exactly 0 except for the VP-SDE path (exp(-T/2), about 0.0066)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_sample_and_target_broadcast_per_example_time(path):
    z, eps = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x = path.sample(z, eps, t)
    for i in range(3):
        ti = t[i]
        torch.testing.assert_close(x[i], path.alpha(ti) * z[i] + path.beta(ti) * eps[i])
        target = path.d_alpha(ti) * z[i] + path.d_beta(ti) * eps[i]
        torch.testing.assert_close(path.target_velocity(z, eps, t)[i], target)


def test_path_config_round_trip_and_factory():
    for path in PATHS:
        assert path_from_config(path.config()) == path
    assert path_from_config({"kind": "vp", "beta_min": 0.2, "beta_max": 10.0}) == VPPath(0.2, 10.0)
    with pytest.raises(ValueError, match="unknown path kind 'sub_vp'"):
        path_from_config({"kind": "sub_vp"})


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_conversions_round_trip(path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    for source in PREDICTIONS:
        pred = torch.randn(64, 3, generator=gen, dtype=torch.float64)
        for target in PREDICTIONS:
            there = convert(pred, source, target, x, t, path)
            back = convert(there, target, source, x, t, path)
            torch.testing.assert_close(back, pred, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_conversions_agree_with_the_truth_from_z_and_eps(path):
    """Given x = alpha z + beta eps, each prediction kind built from (z, eps) converts to the others."""
    gen = torch.Generator().manual_seed(1)
    z, eps = torch.randn(32, 2, generator=gen, dtype=torch.float64), torch.randn(32, 2, generator=gen,
                                                                              dtype=torch.float64)
    t = torch.rand(32, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    x = path.sample(z, eps, t)
    tt = t[:, None]
    truth = {"x0": z, "epsilon": eps, "velocity": path.target_velocity(z, eps, t), "score": -eps / path.beta(tt),
             "v": path.alpha(tt) * eps - path.beta(tt) * z}
    for source in PREDICTIONS:
        for target in PREDICTIONS:
            torch.testing.assert_close(convert(truth[source], source, target, x, t, path), truth[target])


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_velocity_from_exact_gmm_score_equals_exact_marginal_velocity(path):
    field = GMMField(mixture(), path)
    gen = torch.Generator().manual_seed(2)
    x = 2 * torch.randn(200, 2, generator=gen, dtype=torch.float64)
    t = torch.rand(200, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    for cond in (None, Condition(labels=torch.tensor([0])), Condition(labels=torch.tensor([1]))):
        velocity = score_to_velocity(field.exact_score(x, t, cond), x, t, path)
        torch.testing.assert_close(velocity, field(x, t, cond), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", PATHS[:3], ids=IDS[:3])
def test_marginal_field_is_the_posterior_mixture_of_class_fields(path):
    """u(x) = sum_y p_t(y|x) u(x|y), with p_t(y|x) from the exact classifier."""
    gmm = mixture()
    field, classifier = GMMField(gmm, path), GMMClassifier(gmm, path)
    x = 2 * torch.randn(100, 2, dtype=torch.float64)
    t = torch.full((100,), 0.6, dtype=torch.float64)
    probs = torch.softmax(classifier(x, t), dim=-1)
    mixed = sum(probs[:, y:y + 1] * field(x, t, Condition(labels=torch.tensor([y]))) for y in range(2))
    torch.testing.assert_close(mixed, field(x, t))
    null = Condition(labels=torch.tensor([gmm.num_classes]))
    torch.testing.assert_close(field(x, t, null), field(x, t))


def test_gmm_field_matches_a_single_gaussian_closed_form():
    """One component N(m, s^2): u = alpha' m + (alpha' alpha s^2 + beta' beta) / v (x - alpha m)."""
    path = CosinePath()
    gmm = GaussianMixture(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 2.0]]))
    x = torch.randn(10, 2, dtype=torch.float64)
    t = torch.full((10,), 0.3, dtype=torch.float64)
    a, b, da, db = (f(torch.tensor(0.3, dtype=torch.float64)) for f in (path.alpha, path.beta, path.d_alpha,
                                                                         path.d_beta))
    m, s = gmm.means[0], gmm.stds[0]
    v = a * a * s * s + b * b
    expected = da * m + (da * a * s * s + db * b) / v * (x - a * m)
    torch.testing.assert_close(GMMField(gmm, path)(x, t), expected)


class _PredictingBackbone(torch.nn.Module):
    """A 'network' whose output is the exact prediction of `kind` (stands in for a trained model)."""

    def __init__(self, field: GMMField, kind: str) -> None:
        super().__init__()
        self.field, self.prediction = field, kind

    def forward(self, x, t, cond=None):
        return self.field.predict(x, t, cond, self.prediction)


@pytest.mark.parametrize("kind", ["velocity", "epsilon", "x0", "score"])
def test_model_field_converts_any_prediction_to_the_velocity(kind):
    path = LinearVPPath()
    exact = GMMField(mixture(), path)
    field = model_field(Context("f", "core/model_field"), _PredictingBackbone(exact, kind), path, "auto")
    assert isinstance(field, ModelField) and field.prediction == kind
    x = torch.randn(50, 2, dtype=torch.float64)
    t = torch.linspace(0.05, 0.95, 50, dtype=torch.float64)
    torch.testing.assert_close(field(x, t), exact(x, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(field.score(x, t), exact.exact_score(x, t), rtol=1e-6, atol=1e-6)


def test_guidance_coefficient_is_the_score_weight_in_the_velocity():
    """Adding g to the score adds b_t g to the velocity (linearity of the conversion)."""
    path = CosinePath()
    x, score, g = (torch.randn(8, 2, dtype=torch.float64) for _ in range(3))
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)
    shifted = score_to_velocity(score + g, x, t, path) - score_to_velocity(score, x, t, path)
    torch.testing.assert_close(shifted, guidance_coefficient(path, t[:, None]) * g)


def test_preset_mixture_labels_and_sampling():
    gmm = preset_mixture("ring", 8, 4.0, 0.4, 1.0, 4)
    assert gmm.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3] and gmm.num_classes == 4
    points, labels, components = gmm.sample(4000, torch.Generator().manual_seed(0))
    assert points.shape == (4000, 2) and bool((labels == components % 4).all())
    radius = points.norm(dim=1).mean()
    assert 3.8 < float(radius) < 4.2


def test_convert_prediction_node_on_a_scalar_time():
    path = CosinePath()
    z, eps = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    x = path.sample(z, eps, 0.3)
    velocity = convert_prediction(path, eps, x, 0.3, "epsilon", "velocity")
    torch.testing.assert_close(velocity, path.target_velocity(z, eps, 0.3))
    torch.testing.assert_close(convert_prediction(path, velocity, x, 0.3, "velocity", "x0"), z)


def test_coefficients_are_the_four_schedule_values_at_once():
    """`coefficients(t)` (one schedule lookup for DDPM) gives exactly alpha, beta, alpha', beta'."""
    from nodes.schedules import DiscreteDDPMPath

    t = torch.linspace(0, 1, 37)
    for path in (*PATHS, DiscreteDDPMPath()):
        for got, want in zip(path.coefficients(t), (path.alpha(t), path.beta(t), path.d_alpha(t), path.d_beta(t)),
                             strict=True):
            assert torch.equal(got, want), path
