"""core/accelerate: autocast close to fp32, the input backbone untouched, channels_last exact, processors swappable."""

from __future__ import annotations

import pytest
import torch

from nodegraph import Session, Workflow
from nodes.accelerate import AcceleratedBackbone, accelerate_backbone
from nodes.conditioning import Condition
from nodes.models.attention import attention_modules, attention_processor
from nodes.models.mlp import MLPBackbone
from nodes.models.unet import UNet


def small_text_unet() -> UNet:
    torch.manual_seed(0)
    model = UNet(image_size=8, in_channels=4, channels=16, channel_mults=[1, 2], num_res_blocks=1,
                 attention_resolutions=[8, 4], heads=2, context_dim=12, pooled_dim=12).eval()
    with torch.no_grad():  # the output layers start at zero; perturb every weight so the output is non-trivial
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def inputs(batch: int = 3) -> tuple[torch.Tensor, torch.Tensor, Condition]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 8, 8, generator=gen)
    t = torch.rand(batch, generator=gen)
    cond = Condition(tokens=torch.randn(batch, 5, 12, generator=gen), mask=torch.ones(batch, 5, dtype=torch.bool),
                     pooled=torch.randn(batch, 12, generator=gen))
    return x, t, cond


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_close_to_float32_and_returns_input_dtype(dtype: str) -> None:
    model = small_text_unet()
    x, t, cond = inputs()
    with torch.no_grad():
        ref = model(x, t, cond)
        out = accelerate_backbone(model, dtype)(x, t, cond)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # bf16 keeps 8 mantissa bits (relative step 2^-8 ~ 0.004); a few roundings per layer stay within ~5% of scale
    scale = ref.abs().max().item()
    assert (out - ref).abs().max().item() <= 0.05 * scale
    assert not torch.equal(out, ref)  # autocast really ran in low precision


def test_channels_last_equal_and_input_module_unchanged() -> None:
    model = small_text_unet()
    before = snapshot(model)
    strides_before = {k: v.stride() for k, v in model.state_dict().items()}
    x, t, cond = inputs()
    wrapped = accelerate_backbone(model, "float32", channels_last=True)
    with torch.no_grad():
        ref, out = model(x, t, cond), wrapped(x, t, cond)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) and after[k].stride() == strides_before[k] for k in before)
    conv = wrapped.inner.input_conv if hasattr(wrapped.inner, "input_conv") else next(
        m for m in wrapped.inner.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert wrapped.inner is not model


def test_wrapper_keeps_config_prediction_and_state() -> None:
    model = small_text_unet()
    wrapped = accelerate_backbone(model, "bfloat16")
    assert isinstance(wrapped, AcceleratedBackbone) and isinstance(wrapped, torch.nn.Module)
    assert wrapped.config == model.config and wrapped.prediction == model.prediction
    assert wrapped.inner is model  # autocast alone shares the weights (no copy)
    assert [k.removeprefix("inner.") for k in wrapped.state_dict()] == list(model.state_dict())


class ZeroAttention:
    """A processor whose attention output is zero: changes the network's output if it is really used."""

    def __call__(self, attn, q, k, v, mask=None, is_cross=False):  # noqa: ANN001, ANN204
        return torch.zeros_like(q)


def test_attention_processors_swappable_through_wrapper() -> None:
    model = small_text_unet()
    wrapped = accelerate_backbone(model, "float32", channels_last=True)
    assert set(attention_modules(wrapped)) == set(attention_modules(model))
    x, t, cond = inputs()
    with torch.no_grad():
        plain = wrapped(x, t, cond)
        with attention_processor(wrapped, ZeroAttention()):
            zeroed = wrapped(x, t, cond)
        restored = wrapped(x, t, cond)
    assert not torch.allclose(plain, zeroed)
    torch.testing.assert_close(restored, plain)


def test_node_in_a_workflow_leaves_cached_backbone_alone() -> None:
    workflow = Workflow.from_dict({"nodes": {
        "net": {"type": "core/unet", "inputs": {"image_size": 8, "in_channels": 4, "channels": 16,
                                                "channel_mults": [1], "num_res_blocks": 1, "attention_resolutions": [],
                                                "heads": 2, "num_classes": 3, "seed": 0}},
        "fast": {"type": "core/accelerate", "inputs": {"backbone": {"from": "net", "output": "unet"},
                                                       "dtype": "bfloat16", "channels_last": True}},
    }})
    result = Session(device="cpu").run(workflow, outputs=["net", "fast"])
    net, fast = result.value("net"), result.value("fast")
    assert fast.inner is not net
    assert all(p.is_contiguous() for p in net.parameters())
    x, t = torch.randn(2, 4, 8, 8), torch.rand(2)
    cond = Condition(labels=torch.tensor([0, 3]))
    with torch.no_grad():
        ref, out = net(x, t, cond), fast(x, t, cond)
    assert (out - ref).abs().max().item() <= 0.05 * ref.abs().max().item()


def test_compile_matches_eager_on_a_small_mlp() -> None:
    """torch.compile through the wrapper (about 17 s cold on the shared 2-core CPU for this tiny MLP; the text
    U-Net takes 12-80 s, so it is measured in benchmarks, not here)."""
    model = MLPBackbone(dim=2, hidden=16, depth=1, num_classes=3).eval()
    x, t, cond = torch.randn(4, 2), torch.rand(4), Condition(labels=torch.tensor([0, 1, 2, 3]))
    wrapped = accelerate_backbone(model, compile_mode="default")
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x, t, cond), model(x, t, cond), rtol=1e-5, atol=1e-6)
    assert [k.removeprefix("inner.") for k in wrapped.state_dict()] == list(model.state_dict())
