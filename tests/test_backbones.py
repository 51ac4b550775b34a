"""Backbones: output shapes, conditioning, and the one attention-processor interface."""

import pytest
import torch

from nodes.conditioning import Condition
from nodes.models import attention_modules, attention_probs, attention_processor, set_attention_processor
from nodes.models.classifier import NoisyClassifier
from nodes.models.dit import DiT
from nodes.models.mlp import MLPBackbone
from nodes.models.unet import UNet

from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter (zero-initialised output layers included) so every path affects the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def text_cond(batch: int, length: int = 5, dim: int = 16, seed: int = 1) -> Condition:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -2:] = False
    return Condition(tokens=torch.randn(batch, length, dim, generator=gen), mask=mask,
                     pooled=torch.randn(batch, dim, generator=gen))


SMALL_UNET = dict(image_size=8, channels=8, channel_mults=(1, 2), attention_resolutions=(8, 4), heads=2)


@pytest.mark.parametrize("model, x, cond", [
    (UNet(num_classes=10, **SMALL_UNET), torch.randn(3, 1, 8, 8), Condition(labels=torch.tensor([0, 5, 10]))),
    (UNet(in_channels=3, context_dim=16, pooled_dim=16, **SMALL_UNET), torch.randn(2, 3, 8, 8), text_cond(2)),
    (DiT(image_size=8, patch_size=2, dim=16, depth=2, heads=2, num_classes=4), torch.randn(3, 1, 8, 8),
     Condition(labels=torch.tensor([1]))),
    (DiT(in_channels=4, image_size=8, dim=16, depth=2, heads=2, context_dim=16, pooled_dim=16),
     torch.randn(2, 4, 8, 8), text_cond(2)),
    (MLPBackbone(dim=2, hidden=16, depth=2, num_classes=3), torch.randn(5, 2), Condition(labels=torch.tensor([2]))),
])
def test_backbone_output_shape_and_attributes(model, x, cond):
    out = model(x, torch.rand(x.shape[0]), cond)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert model.prediction == "velocity"
    rebuilt = type(model)(**model.config)
    assert rebuilt.config == model.config
    assert model(x, 0.5, None).shape == x.shape  # scalar t, no condition


def test_classifier_logits_shape():
    clf = NoisyClassifier(image_size=8, channels=8, channel_mults=(1, 2), num_classes=7)
    assert clf(torch.randn(4, 1, 8, 8), torch.rand(4)).shape == (4, 7)


def test_missing_label_means_null_label():
    model = randomised(UNet(num_classes=10, **SMALL_UNET))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    torch.testing.assert_close(model(x, t, None), model(x, t, Condition(labels=torch.tensor([10, 10]))))
    assert not torch.allclose(model(x, t, None), model(x, t, Condition(labels=torch.tensor([3, 3]))))
    with pytest.raises(ValueError, match="labels must lie"):
        model(x, t, Condition(labels=torch.tensor([11, 0])))


class Recorder:
    """Records what the processor sees and optionally replaces the probabilities by uniform weights."""

    def __init__(self, uniform: bool = False) -> None:
        self.calls: list[tuple[str, bool, tuple, tuple, tuple]] = []
        self.uniform = uniform

    def __call__(self, attn, q, k, v, mask, is_cross):
        self.calls.append((attn.name, is_cross, tuple(q.shape), tuple(k.shape), tuple(v.shape)))
        probs = attention_probs(q, k, mask)
        if self.uniform:
            probs = torch.ones_like(probs) / probs.shape[-1]
        return probs @ v


def test_processor_sees_qkv_and_explicit_softmax_matches_default():
    model = randomised(UNet(in_channels=1, context_dim=16, **SMALL_UNET))
    x, t, cond = torch.randn(2, 1, 8, 8), torch.rand(2), text_cond(2)
    default = model(x, t, cond)
    recorder = Recorder()
    with attention_processor(model, recorder):
        explicit = model(x, t, cond)
    torch.testing.assert_close(explicit, default, atol=1e-5, rtol=1e-4)
    names = [c[0] for c in recorder.calls]
    assert set(names) == set(attention_modules(model))
    for name, is_cross, q, k, v in recorder.calls:
        assert len(q) == 4 and q[1] == 2  # (B, heads, L, d)
        assert k == v and k[2] == (5 if is_cross else q[2])
        assert is_cross == name.endswith("cross_attn")


def test_processor_replacing_probabilities_changes_output_and_is_restored():
    model = randomised(DiT(image_size=8, dim=16, depth=2, heads=2, num_classes=3))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    before = model(x, t, None)
    with attention_processor(model, Recorder(uniform=True)):
        changed = model(x, t, None)
    assert (changed - before).abs().max() > 1e-3
    torch.testing.assert_close(model(x, t, None), before)
    previous = set_attention_processor(model, Recorder(uniform=True), where=lambda a: a.name == "blocks.0.attn")
    assert set(previous) == {"blocks.0.attn", "blocks.1.attn"}
    assert isinstance(attention_modules(model)["blocks.0.attn"].processor, Recorder)
    assert not isinstance(attention_modules(model)["blocks.1.attn"].processor, Recorder)
    set_attention_processor(model, None)
    torch.testing.assert_close(model(x, t, None), before)
    assert "processor" not in str(list(model.state_dict()))


def test_attention_names_flags_and_resolution():
    model = UNet(image_size=16, channels=8, channel_mults=(1, 2), attention_resolutions=(16,), context_dim=8)
    modules = attention_modules(model)
    assert len(modules) == len(set(modules))
    assert modules["down.0.0.attn.self_attn"].resolution == (16, 16)
    assert modules["mid.0.attn.cross_attn"].is_cross and modules["mid.0.attn.cross_attn"].resolution == (8, 8)
    assert list(attention_modules(UNet(**model.config))) == list(modules)  # stable across rebuilds


def test_masked_tokens_do_not_matter_and_empty_mask_equals_no_text():
    model = randomised(UNet(in_channels=1, context_dim=16, **SMALL_UNET))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    cond = text_cond(2)
    noisy_tail = cond.tokens.clone()
    noisy_tail[:, -2:] = 100.0
    torch.testing.assert_close(model(x, t, cond), model(x, t, Condition(tokens=noisy_tail, mask=cond.mask)),
                               atol=1e-5, rtol=1e-5)
    empty = Condition(tokens=cond.tokens, mask=torch.zeros_like(cond.mask))
    torch.testing.assert_close(model(x, t, empty), model(x, t, None))
