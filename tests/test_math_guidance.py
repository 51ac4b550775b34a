"""CFG and classifier guidance against the exact Gaussian-mixture fields."""

import pytest
import torch

from nodes import guidance_nodes
from nodes.conditioning import Condition
from nodes.field_nodes import condition_field
from nodes.fields import ModelField
from nodes.guidance import CFG
from nodes.guidance_nodes import class_condition, classifier_guidance
from nodes.models.mlp import MLPBackbone
from nodes.paths import CondOTPath, CosinePath
from nodes.solvers import euler
from nodes.time_grids import uniform_grid
from nodes.toy import GMMClassifier, GMMField, preset_mixture

GMM = preset_mixture("ring", 8, 4.0, 0.4, 1.0, 4)


def cfg(*args, **kwargs):
    """core/cfg called as plain Python: the `method` choice is passed as the component itself."""
    return guidance_nodes.cfg(*args, method=CFG, **kwargs)


NULL = class_condition(GMM.num_classes)
LABEL = class_condition(1)


class CountingField(GMMField):
    """The exact field, counting forward passes and the batch size of each."""

    def __init__(self, path):
        super().__init__(GMM, path)
        self.batches: list[int] = []

    def __call__(self, x, t, cond=None):
        self.batches.append(x.shape[0])
        return super().__call__(x, t, cond)


def _points(n=64, t=0.5):
    gen = torch.Generator().manual_seed(0)
    return 3 * torch.randn(n, 2, generator=gen, dtype=torch.float64), torch.full((n,), t, dtype=torch.float64)


def test_scale_one_is_the_conditional_field_in_one_forward_pass():
    field = CountingField(CondOTPath())
    x, t = _points()
    guided = cfg(field, LABEL, NULL, scale=1.0)
    out = guided(x, t)
    assert field.batches == [64]
    torch.testing.assert_close(out, GMMField(GMM, CondOTPath())(x, t, LABEL.expand(64)), rtol=0, atol=0)


def test_scale_zero_is_the_unconditional_field():
    x, t = _points()
    out = cfg(GMMField(GMM, CondOTPath()), LABEL, NULL, scale=0.0)(x, t)
    torch.testing.assert_close(out, GMMField(GMM, CondOTPath())(x, t))


def test_guided_field_is_the_affine_combination_in_one_batched_pass():
    field = CountingField(CosinePath())
    x, t = _points()
    out = cfg(field, LABEL, NULL, scale=3.5)(x, t)
    assert field.batches == [128]
    exact = GMMField(GMM, CosinePath())
    cond, uncond = exact(x, t, LABEL), exact(x, t)
    torch.testing.assert_close(out, -2.5 * uncond + 3.5 * cond)


def test_batched_and_unbatched_agree_through_a_real_network():
    torch.manual_seed(0)
    net = MLPBackbone(dim=2, hidden=32, depth=2, num_classes=4)
    field = ModelField(net, CondOTPath(), "velocity")
    x, t = (v.float() for v in _points(16, 0.3))
    cond = Condition(labels=torch.arange(16) % 4)  # a different label per example
    with torch.no_grad():
        batched = cfg(field, cond, NULL, scale=4.0, batched=True)(x, t)
        separate = cfg(field, cond, NULL, scale=4.0, batched=False)(x, t)
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-5)
    assert float((batched - net(x, t, cond).detach()).abs().max()) > 1e-3  # guidance did change the output


@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_cfg_on_the_network_prediction_equals_cfg_on_the_velocity(prediction):
    """CFG is affine and so are the conversions between predictions: guiding an epsilon / v / x0 network in its
    own kind and converting once (velocity, or DDIM's x0 and eps) is the velocity-space CFG, up to float32 rounding."""
    from nodes.guidance import CFGField, GuidanceMethod, cfg_combine
    from nodes.schedules import DiscreteDDPMPath

    torch.manual_seed(0)
    net = MLPBackbone(dim=2, hidden=32, depth=2, num_classes=4, prediction=prediction)
    field = ModelField(net, DiscreteDDPMPath(), prediction)
    x, t = torch.randn(16, 2), torch.full((16,), 0.37)
    cond = Condition(labels=torch.arange(16) % 4)
    native = CFGField(field, cond, NULL, 6.0)
    velocity_space = CFGField(field, cond, NULL, 6.0, method=GuidanceMethod("cfg", cfg_combine))  # not `affine`
    with torch.no_grad():
        torch.testing.assert_close(native(x, t), velocity_space(x, t), rtol=1e-5, atol=1e-5)
        for got, want in zip(native.x0_eps(x, t), velocity_space.x0_eps(x, t), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_guidance_above_one_moves_samples_toward_the_conditional_mode():
    """Two overlapping classes (means -1, +1, std 0.8): w > 1 pushes samples further into class 1."""
    path = CondOTPath()
    overlap = preset_mixture("line", 2, 1.0, 0.8, 1.0, 2)
    null = class_condition(2)
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(3))
    classifier = GMMClassifier(overlap, path)
    confidence, centre = [], []
    for scale in (0.0, 1.0, 3.0):
        samples = euler(cfg(GMMField(overlap, path), LABEL, null, scale=scale), x0, uniform_grid(50))
        confidence.append(float(torch.softmax(classifier(samples, torch.ones(4000)), dim=-1)[:, 1].mean()))
        centre.append(float(samples[:, 0].mean()))
    assert confidence[0] == pytest.approx(0.5, abs=0.03) and centre[0] == pytest.approx(0.0, abs=0.05)
    assert centre[1] == pytest.approx(1.0, abs=0.05)  # w = 1 samples the class-1 component N(+1, 0.8^2)
    assert confidence[2] > confidence[1] + 0.05 and centre[2] > centre[1] + 0.3


def test_guidance_interval_switches_guidance_off_outside():
    field = CountingField(CondOTPath())
    guided = cfg(field, LABEL, NULL, scale=3.0, t_lo=0.2, t_hi=0.6)
    exact = GMMField(GMM, CondOTPath())
    x, _ = _points()
    t_out = torch.full((64,), 0.8, dtype=torch.float64)
    torch.testing.assert_close(guided(x, t_out), exact(x, t_out, LABEL))
    assert field.batches == [64]
    t_mixed = torch.where(torch.arange(64) % 2 == 0, 0.4, 0.8).double()
    out = guided(x, t_mixed)
    inside = torch.arange(64) % 2 == 0
    full = cfg(exact, LABEL, NULL, scale=3.0)(x, t_mixed)
    torch.testing.assert_close(out[inside], full[inside])
    torch.testing.assert_close(out[~inside], exact(x, t_mixed, LABEL)[~inside])


def test_negative_condition_replaces_null():
    exact = GMMField(GMM, CondOTPath())
    x, t = _points()
    negative = class_condition(2)
    out = cfg(exact, LABEL, NULL, scale=2.0, negative=negative)(x, t)
    torch.testing.assert_close(out, exact(x, t, negative) + 2.0 * (exact(x, t, LABEL) - exact(x, t, negative)))


def test_rescale_one_matches_the_conditional_std():
    exact = GMMField(GMM, CondOTPath())
    x, t = _points()
    out = cfg(exact, LABEL, NULL, scale=5.0, rescale=1.0)(x, t)
    plain = cfg(exact, LABEL, NULL, scale=5.0)(x, t)
    torch.testing.assert_close(out.std(dim=1), exact(x, t, LABEL).std(dim=1))
    torch.testing.assert_close(out / out.norm(dim=1, keepdim=True), plain / plain.norm(dim=1, keepdim=True))


def test_empty_interval_is_rejected():
    with pytest.raises(ValueError):
        cfg(GMMField(GMM, CondOTPath()), LABEL, NULL, t_lo=0.7, t_hi=0.2)


@pytest.mark.parametrize("path", [CondOTPath(), CosinePath()], ids=["cond_ot", "cosine"])
def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_field(path):
    exact = GMMField(GMM, path)
    guided = classifier_guidance(exact, GMMClassifier(GMM, path), label=1, scale=1.0, alpha_min=1e-3)
    x, _ = _points(48)
    t = torch.linspace(0.05, 0.95, 48, dtype=torch.float64)
    torch.testing.assert_close(guided(x, t), exact(x, t, LABEL), rtol=1e-6, atol=1e-6)


def test_classifier_guidance_clipping_near_t0():
    path = CondOTPath()
    exact = GMMField(GMM, path)
    x, _ = _points(8)
    t = torch.full((8,), 1e-3, dtype=torch.float64)
    skip = classifier_guidance(exact, GMMClassifier(GMM, path), label=1, scale=2.0, alpha_min=0.05, clip_mode="skip")
    torch.testing.assert_close(skip(x, t), exact(x, t))
    clamp = classifier_guidance(exact, GMMClassifier(GMM, path), label=1, scale=2.0, alpha_min=0.05)
    assert torch.isfinite(clamp(x, torch.zeros(8, dtype=torch.float64))).all()


def test_condition_field_binds_the_label():
    exact = GMMField(GMM, CondOTPath())
    x, t = _points()
    torch.testing.assert_close(condition_field(exact, LABEL)(x, t), exact(x, t, LABEL))
