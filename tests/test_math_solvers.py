"""Solvers: measured convergence order, adaptive tolerance, sampling the exact mixture (ODE and SDE)."""

import math

import pytest
import torch

from nodegraph import Cancelled, Context
from nodes.fields import CountingField, ModelField, VectorField
from nodes.paths import CondOTPath, CosinePath, VEPath
from nodes.sigma import SigmaSchedule
from nodes.solve_nodes import dopri5_solver, ode_solve
from nodes.solvers import BUILTIN_SOLVERS, ddim, dopri5, euler, euler_maruyama, heun
from nodes.time_grids import custom_grid, karras_grid, shift_times, uniform_grid
from nodes.toy import GaussianMixture, GMMClassifier, GMMField

SOLVERS = {solver.name: solver for solver in BUILTIN_SOLVERS}


class LinearField(VectorField):
    """dx/dt = cos(t) x, solved by x(t) = x(0) exp(sin t)."""

    def __call__(self, x, t, cond=None):
        return torch.cos(t)[:, None] * x


def _error(method: str, steps: int) -> float:
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    x1 = SOLVERS[method](LinearField(), x0, uniform_grid(steps, 0.0, 1.0))
    return float((x1 - x0 * math.exp(math.sin(1.0))).abs().max())


def _fitted_order(method: str, steps: list[int]) -> float:
    logs_h = torch.tensor([math.log(1 / n) for n in steps], dtype=torch.float64)
    logs_e = torch.tensor([math.log(_error(method, n)) for n in steps], dtype=torch.float64)
    centred = logs_h - logs_h.mean()
    return float((centred * (logs_e - logs_e.mean())).sum() / (centred * centred).sum())


@pytest.mark.parametrize(("method", "order", "steps"), [
    ("euler", 1, [16, 32, 64, 128]),
    ("heun", 2, [8, 16, 32, 64]),
    ("midpoint", 2, [8, 16, 32, 64]),
    ("rk4", 4, [4, 8, 16, 32]),
])
def test_measured_convergence_order(method, order, steps):
    assert abs(_fitted_order(method, steps) - order) < 0.15


@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_dopri5_meets_its_tolerance_and_reports_nfe(tol):
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    counted = CountingField(LinearField())
    x1 = dopri5(counted, x0, uniform_grid(1), rtol=tol, atol=tol)
    error = float((x1 - x0 * math.exp(math.sin(1.0))).abs().max())
    assert error < 10 * tol
    assert counted.calls > 7 and (counted.calls - 1) % 6 == 0  # 1 initial + 6 per attempted step (FSAL)


def test_ode_solve_node_reports_nfe_and_trajectory():
    ctx = Context(node_id="solve", node_type="core/ode_solve")
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    counted = CountingField(LinearField())
    direct = dopri5(counted, x0, uniform_grid(4), rtol=1e-6, atol=1e-6)
    out = ode_solve(ctx, LinearField(), x0, uniform_grid(4), method=dopri5_solver(rtol=1e-6, atol=1e-6),
                    keep_trajectory=True)
    torch.testing.assert_close(out.latent, direct)
    assert out.nfe == counted.calls and out.trajectory.shape == (5, 1, 2)
    for i, t in enumerate(uniform_grid(4).tolist()):
        torch.testing.assert_close(out.trajectory[i], x0 * math.exp(math.sin(t)), rtol=1e-5, atol=1e-5)
    rk = ode_solve(ctx, LinearField(), x0, uniform_grid(8), method=SOLVERS["rk4"])
    assert rk.nfe == 32 and rk.trajectory.shape == (2, 1, 2)


def test_dopri5_tighter_tolerance_costs_more_evaluations():
    calls = []
    for tol in (1e-3, 1e-8):
        counted = CountingField(LinearField())
        dopri5(counted, torch.ones(1, 2, dtype=torch.float64), uniform_grid(1), rtol=tol, atol=tol)
        calls.append(counted.calls)
    assert calls[1] > calls[0]


def test_trajectory_and_callback_once_per_step():
    states, seen = [], []
    x = euler(LinearField(), torch.ones(2, 2), uniform_grid(5), callback=lambda i, n: seen.append((i, n)),
              trajectory=states)
    assert seen == [(i, 5) for i in range(1, 6)]
    assert len(states) == 5 and torch.equal(states[-1], x)


def test_cancellation_raised_by_the_callback_stops_the_solver():
    def cancel(i, n):
        if i == 3:
            raise Cancelled("stop")

    counted = CountingField(LinearField())
    with pytest.raises(Cancelled):
        heun(counted, torch.ones(1, 2), uniform_grid(10), callback=cancel)
    assert counted.calls == 6


def test_ddim_equals_euler_on_cond_ot_with_a_velocity_field():
    field = GMMField(_mixture(), CondOTPath())
    x = torch.randn(100, 2, dtype=torch.float64)
    grid = uniform_grid(10)
    torch.testing.assert_close(ddim(field, x, grid), euler(field, x, grid))


def test_time_grids():
    grid = uniform_grid(4, 0.1, 0.9)
    torch.testing.assert_close(grid, torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64))
    t = uniform_grid(10)
    torch.testing.assert_close(shift_times(t, 1.0), t)
    shifted = shift_times(t, 3.0)
    assert bool((shifted[1:] > shifted[:-1]).all()) and bool((shifted[1:-1] < t[1:-1]).all())
    path = CosinePath()
    k = karras_grid(6, path, 0.01, 50.0, 7.0)
    sigmas = path.beta(k[:-1]) / path.alpha(k[:-1])
    assert float(sigmas[0]) == pytest.approx(50.0, rel=1e-6) and float(sigmas[-1]) == pytest.approx(0.01, rel=1e-6)
    assert float(k[-1]) == 1.0 and bool((k[1:] > k[:-1]).all())
    with pytest.raises(ValueError):
        custom_grid([0.0, 0.5, 0.4])


def _mixture() -> GaussianMixture:
    means = torch.tensor([[-3.0, 0.0], [2.0, 2.0], [1.0, -2.5]])
    stds = torch.tensor([[0.5, 0.3], [0.4, 0.4], [0.3, 0.6]])
    return GaussianMixture(means, stds, torch.tensor([0.5, 0.3, 0.2]), labels=torch.tensor([0, 1, 1]))


def _check_matches_mixture(samples: torch.Tensor, gmm: GaussianMixture, tol_mean: float, tol_weight: float) -> None:
    """Assign samples to the nearest mean; compare weights, per-component means and covariances."""
    nearest = torch.cdist(samples.double(), gmm.means).argmin(dim=1)
    for k in range(gmm.means.shape[0]):
        members = samples[nearest == k].double()
        assert abs(members.shape[0] / samples.shape[0] - float(gmm.weights[k])) < tol_weight
        assert float((members.mean(0) - gmm.means[k]).abs().max()) < tol_mean
        std = members.std(0)
        torch.testing.assert_close(std, gmm.stds[k], rtol=0.1, atol=0.0)


N = 20_000


def test_ode_on_the_exact_field_samples_the_mixture():
    gmm = _mixture()
    field = GMMField(gmm, CondOTPath())
    x0 = torch.randn(N, 2, generator=torch.Generator().manual_seed(0))
    samples = heun(field, x0, uniform_grid(16))
    _check_matches_mixture(samples, gmm, tol_mean=0.05, tol_weight=0.015)


def test_dopri5_on_the_exact_field_samples_the_mixture():
    gmm = _mixture()
    field = CountingField(GMMField(gmm, CosinePath()))
    x0 = torch.randn(N, 2, generator=torch.Generator().manual_seed(1))
    samples = dopri5(field, x0, uniform_grid(1), rtol=1e-4, atol=1e-4)
    _check_matches_mixture(samples, gmm, tol_mean=0.05, tol_weight=0.015)
    assert field.calls < 400


def test_ve_path_ode_from_wide_noise_samples_the_mixture():
    gmm = _mixture()
    path = VEPath(0.01, 40.0)
    x0 = 40.0 * torch.randn(5000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    samples = dopri5(GMMField(gmm, path), x0, uniform_grid(1), rtol=1e-5, atol=1e-5)
    _check_matches_mixture(samples, gmm, tol_mean=0.06, tol_weight=0.03)


@pytest.mark.parametrize("sigma", [SigmaSchedule("beta", 1.0), SigmaSchedule("constant", 0.5)],
                         ids=["beta", "constant"])
def test_sde_with_noise_on_the_exact_score_samples_the_mixture(sigma):
    gmm = _mixture()
    field = GMMField(gmm, CondOTPath())
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(N, 2, generator=gen)
    samples = euler_maruyama(field, x0, uniform_grid(100), sigma=sigma, generator=gen)
    _check_matches_mixture(samples, gmm, tol_mean=0.06, tol_weight=0.02)
    # the noise really is injected: the SDE and ODE samples from the same start differ
    ode = euler(field, x0[:1000], uniform_grid(100))
    assert float((samples[:1000] - ode).abs().mean()) > 0.05


def test_sde_seeded_noise_is_reproducible_and_zero_sigma_is_euler():
    field = GMMField(_mixture(), CondOTPath())
    x0 = torch.randn(50, 2)
    grid = uniform_grid(20)
    runs = [euler_maruyama(field, x0, grid, sigma=SigmaSchedule("beta"), generator=torch.Generator().manual_seed(5))
            for _ in range(2)]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    torch.testing.assert_close(euler_maruyama(field, x0, grid, sigma=SigmaSchedule("zero")), euler(field, x0, grid))


def test_classifier_on_ode_samples_agrees_with_component_labels():
    gmm = _mixture()
    field = GMMField(gmm, CondOTPath())
    samples = heun(field, torch.randn(2000, 2), uniform_grid(30))
    probs = torch.softmax(GMMClassifier(gmm, CondOTPath())(samples, torch.ones(2000)), dim=-1)
    share = probs.mean(0)
    assert float(share[0]) == pytest.approx(0.5, abs=0.04)


class _EpsilonBackbone(torch.nn.Module):
    """An epsilon-prediction 'network' returning the exact E[eps | x_t] of a mixture."""

    prediction = "epsilon"

    def __init__(self, field: GMMField) -> None:
        super().__init__()
        self.field = field

    def forward(self, x, t, cond=None):
        return self.field.x0_eps(x, t, cond)[1]


def test_ddim_on_an_epsilon_model_is_exact_for_a_point_mass():
    """DDIM keeps the x0 prediction fixed between steps, so a (near) point mass is hit in 3 steps
    on a curved path (cosine), where Euler with 3 steps is far off; Karras grids work the same."""
    path = CosinePath()
    gmm = GaussianMixture(torch.tensor([[1.5, -0.5]]), torch.tensor([[1e-3, 1e-3]]))
    field = ModelField(_EpsilonBackbone(GMMField(gmm, path)), path, "epsilon")
    x0 = torch.randn(100, 2, dtype=torch.float64)
    target = gmm.means[0].expand(100, 2)
    for grid in (uniform_grid(3, 0.01, 1.0), karras_grid(3, path, 0.01, 80.0)):
        torch.testing.assert_close(ddim(field, x0, grid), target, rtol=0, atol=1e-2)
    assert float((euler(field, x0, uniform_grid(3, 0.01, 1.0)) - target).abs().max()) > 0.1
