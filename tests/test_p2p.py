"""Prompt-to-prompt on a small random text U-Net with the real frozen text encoder."""

import pytest
import torch

from nodes.fields import ModelField
from nodes.models.attention import Attention, attention_probs
from nodes.models.unet import UNet
from nodes.p2p.controller import EditController, EditPlan
from nodes.p2p.nodes import attention_maps, p2p_edit
from nodes.paths import CondOTPath
from nodes.solvers import Solver, euler
from nodes.text.encoder import load_text_encoder

EULER = Solver("euler", euler)


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder()


@pytest.fixture(scope="module")
def field(encoder):
    torch.manual_seed(0)
    unet = UNet(in_channels=2, image_size=8, channels=16, channel_mults=(1, 2), attention_resolutions=(8, 4),
                heads=2, context_dim=encoder.dim, pooled_dim=encoder.dim)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.normal_(0, 0.2)  # zero-initialised output layers would make every map irrelevant
    return ModelField(unet.eval(), CondOTPath())


def euler(f, x, steps=6):
    times = torch.linspace(0, 1, steps + 1)
    with torch.no_grad():
        for a, b in zip(times[:-1], times[1:], strict=True):
            x = x + (b - a) * f(x, a.expand(x.shape[0]))
    return x


def plain(field, encoder, prompt, noise, scale):
    cond = encoder.encode([prompt])
    null = encoder.encode([""], length=cond.tokens.shape[1])
    from nodes.guidance import CFGField

    return euler(CFGField(field, cond, null, scale), noise)


def test_controller_replaces_target_probabilities_with_mapped_source():
    attn = Attention(8, heads=2, context_dim=6)
    q, k, v = torch.randn(2, 2, 5, 4), torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    swap = torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    plan = EditPlan(swap, torch.ones(3), torch.full((3,), 0.5))
    out = EditController(plan, pairs=1, t=0.2)(attn, q, k, v, None, True)
    probs = attention_probs(q, k, None)
    assert torch.allclose(out[0], probs[0] @ v[0], atol=1e-6)
    assert torch.allclose(out[1], (probs[0] @ swap) @ v[1], atol=1e-6)
    late = EditController(plan, pairs=1, t=0.7)(attn, q, k, v, None, True)  # outside the window
    assert torch.allclose(late[1], probs[1] @ v[1], atol=1e-6)


def test_zero_windows_equal_plain_target_generation(field, encoder):
    noise = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    edit = p2p_edit(field, encoder, "a red circle", "a blue square", "replace", guidance=3.0,
                    cross_replace_steps=0.0, self_replace_steps=0.0)
    both = euler(edit, torch.cat([noise, noise]))
    assert torch.allclose(both[1:], plain(field, encoder, "a blue square", noise, 3.0), atol=1e-5)
    assert torch.allclose(both[:1], plain(field, encoder, "a red circle", noise, 3.0), atol=1e-5)


def test_full_windows_change_the_target_only(field, encoder):
    noise = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    source = plain(field, encoder, "a red circle", noise, 3.0)
    target = plain(field, encoder, "a blue square", noise, 3.0)
    edit = p2p_edit(field, encoder, "a red circle", "a blue square", "replace", guidance=3.0,
                    cross_replace_steps=1.0, self_replace_steps=1.0, self_replace_max_tokens=64)
    edited = euler(edit, torch.cat([noise, noise]))
    assert torch.allclose(edited[:1], source, atol=1e-5)  # the source row is never edited
    assert not torch.allclose(edited[1:], target, atol=1e-3)


def test_refine_and_reweight_run_and_differ(field, encoder):
    noise = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    refine = p2p_edit(field, encoder, "a circle", "a big red circle", "refine", guidance=2.0)
    reweight = p2p_edit(field, encoder, "a red circle", "a red circle", "reweight", guidance=2.0,
                        reweight_words="red", reweight_scale=4.0)
    a, b = euler(refine, torch.cat([noise, noise])), euler(reweight, torch.cat([noise, noise]))
    assert torch.isfinite(a).all() and torch.isfinite(b).all()
    assert not torch.allclose(b[0], b[1], atol=1e-4)  # reweighting changed the target
    with pytest.raises(ValueError, match="same number of words"):
        p2p_edit(field, encoder, "a circle", "a big circle", "replace")


def test_local_blend_threshold_extremes(field, encoder):
    noise = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    pair = torch.cat([noise, noise])
    nothing_changes = p2p_edit(field, encoder, "a red circle", "a blue circle", guidance=2.0,
                               blend_words="red blue", blend_threshold=1.0, blend_start=0.0)
    out = euler(nothing_changes, pair)
    assert torch.allclose(out[1], out[0], atol=1e-5)  # mask empty: the target is pulled onto the source
    everything = p2p_edit(field, encoder, "a red circle", "a blue circle", guidance=2.0,
                          blend_words="red blue", blend_threshold=0.0, blend_start=0.0)
    no_blend = p2p_edit(field, encoder, "a red circle", "a blue circle", guidance=2.0)
    assert torch.allclose(euler(everything, pair), euler(no_blend, pair), atol=1e-5)


class _Ctx:
    device = "cpu"

    def progress(self, step, total, **info):
        pass


def test_attention_map_node_draws_one_tile_per_token(field, encoder):
    noise = torch.randn(1, 2, 8, 8)
    image = attention_maps(_Ctx(), field, encoder, noise, torch.linspace(0, 1, 4), "a red circle", 2.0, EULER)
    assert image.shape[:2] == (1, 3) and image.shape[3] == 3 * 64  # three word tokens, 64 px each
    assert 0 <= float(image.min()) and float(image.max()) <= 1
