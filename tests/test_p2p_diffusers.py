"""Prompt-to-prompt on diffusers U-Nets (tiny random SD 1.5 and SDXL folders) through the attention adapter:
the same p2p nodes, CLIP's words, the U-Net's attn1 / attn2 as our attention sites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodegraph import Session, Workflow
from nodes.conditioning import Condition
from nodes.families.attention import BridgeProcessor, LatentGrid
from nodes.families.family import BUILTIN_FAMILIES, load_pipeline
from nodes.fields import ModelField
from nodes.guidance import CFGField
from nodes.models.attention import DEFAULT_PROCESSOR, attention_modules, attention_processor
from nodes.p2p.alignment import word_spans
from nodes.p2p.controller import EditController
from nodes.p2p.nodes import attention_maps, p2p_edit

from .helpers import shipped_problems

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
SOURCE = "a photo of a cat on the grass"
TARGET = "a photo of a dog on the grass"
SIZE, STEPS, SEED = 16, 4, 3


def load(folder: Path):
    parts = load_pipeline(str(folder), {f.name: f for f in BUILTIN_FAMILIES}, torch.float32, "cpu")
    return ModelField(parts.backbone, parts.path, parts.backbone.prediction), parts.text_encoder


@pytest.fixture(scope="module")
def sd15(sd15_folder):
    return load(sd15_folder)


def euler(field, x: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    times = torch.linspace(0.02, 0.98, steps + 1)
    with torch.no_grad():
        for a, b in zip(times[:-1], times[1:], strict=True):
            x = x + (b - a) * field(x, a.expand(x.shape[0]))
    return x


def noise(seed: int = SEED) -> torch.Tensor:
    return torch.randn(1, 4, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(seed))


def plain(field, encoder, prompt: str, x: torch.Tensor, scale: float = 7.5) -> torch.Tensor:
    both = encoder.encode([prompt, ""])
    return euler(CFGField(field, both.select(slice(0, 1)), both.select(slice(1, 2)), scale), x)


class PassThrough:
    """Our interface's default attention, as a processor that is not DEFAULT_PROCESSOR (so the bridge runs)."""

    def __call__(self, attn, q, k, v, mask, is_cross):
        return DEFAULT_PROCESSOR(attn, q, k, v, mask, is_cross)


class Probe:
    """Wraps a processor and records, per cross-attention layer, the probabilities it attends with:
    a processor returns P V, so with V = I (one value per key) it returns P itself, (B, heads, Lq, Lk)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.probs: dict[str, torch.Tensor] = {}

    def __call__(self, attn, q, k, v, mask, is_cross):
        if is_cross:
            eye = torch.eye(k.shape[-2], dtype=q.dtype).expand(*k.shape[:2], -1, -1)
            self.probs[attn.name] = self.inner(attn, q, k, eye, mask, is_cross)
        return self.inner(attn, q, k, v, mask, is_cross)


# The adapter ---------------------------------------------------------------------------------------------------


def test_unet_attention_layers_are_attention_sites(sd15):
    field, _ = sd15
    sites = attention_modules(field.backbone)
    assert sites and all(name.endswith((".attn1", ".attn2")) for name in sites)
    assert {name for name, site in sites.items() if site.is_cross} == {n for n in sites if n.endswith(".attn2")}
    native = {name: type(site.module.processor).__name__ for name, site in sites.items()}
    assert set(native.values()) == {"AttnProcessor2_0"}
    with attention_processor(field.backbone, PassThrough()):
        assert all(isinstance(site.module.processor, BridgeProcessor) for site in sites.values())
    assert {name: type(site.module.processor).__name__ for name, site in sites.items()} == native
    assert all(site.processor is DEFAULT_PROCESSOR for site in sites.values())


def test_a_lora_twin_offers_its_own_layers_not_its_bases(sd15):
    from nodes.families.lora import with_parameters

    field, _ = sd15
    base = field.backbone
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    attention_modules(base)  # the base has found its sites before the twin is made
    weight = base.model.get_submodule(name).to_q.weight
    twin = with_parameters(base, {f"model.{name}.to_q.weight": weight * 2})
    sites = attention_modules(twin)
    assert sites[name].module is twin.model.get_submodule(name) is not base.model.get_submodule(name)
    assert all(site.module is twin.model.get_submodule(n) for n, site in sites.items())
    assert attention_modules(base)[name].module is base.model.get_submodule(name)


def test_a_layer_with_a_foreign_processor_is_refused_and_nothing_stays_swapped(sd15_folder):
    field, _ = load(sd15_folder)
    sites = attention_modules(field.backbone)
    last = list(sites.values())[-1]

    class IPAdapterLike:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
            raise AssertionError("not called")

    foreign = IPAdapterLike()
    last.module.set_processor(foreign)
    with pytest.raises(ValueError, match=f"{last.name}.*IPAdapterLike"):
        with attention_processor(field.backbone, PassThrough()):
            pass
    assert last.module.processor is foreign
    assert all(type(s.module.processor).__name__ == "AttnProcessor2_0" for s in list(sites.values())[:-1])


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_our_attention_path_equals_diffusers_processor(request, family):
    field, encoder = load(request.getfixturevalue(f"{family}_folder"))
    x = noise()
    want = plain(field, encoder, SOURCE, x)
    with attention_processor(field.backbone, PassThrough()):
        got = plain(field, encoder, SOURCE, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_latent_grid_finds_each_level_rounding_up():
    grid = LatentGrid()
    assert grid.resolution(20) is None  # no forward pass yet
    grid.size = (9, 7)
    assert [grid.resolution(n) for n in (63, 20, 6, 2, 1, 7)] == [(9, 7), (5, 4), (3, 2), (2, 1), (1, 1), None]


def test_clip_words_follow_word_ends_and_skip_start_end_padding(sd15):
    _, encoder = sd15
    tokens = encoder.prompt_tokens("a photo of a Zebra, on the grass!", 77)
    assert len(tokens.ids) == 77 and tokens.word_ids[0] is None and tokens.word_ids[-1] is None
    assert tokens.words == ["a", "photo", "of", "a", "zebra", ",", "on", "the", "grass", "!"]
    _, spans = word_spans(tokens.word_ids)
    assert len(spans[4]) == 5 and [tokens.pieces[p] for p in spans[4]] == list("zebra")  # unknown word: letters
    assert tokens.positions({"zebra"}) == spans[4]
    end = max(p for p, w in enumerate(tokens.word_ids) if w is not None) + 1
    assert tokens.pieces[end] == "<|endoftext|>" and all(w is None for w in tokens.word_ids[end:])
    with pytest.raises(ValueError, match="not the 77"):
        encoder.prompt_tokens("a cat", 64)


# Prompt-to-prompt on the U-Net ---------------------------------------------------------------------------------


def evaluate(edit, controller_plan, t: float) -> dict[str, torch.Tensor]:
    """One forward pass of the edit's layout [source, target, null, null] with the controller probed."""
    x = torch.cat([noise()] * 4)
    probe = Probe(EditController(controller_plan, 1, t))
    cond = Condition.cat([*edit.conds, edit.null.expand(2)])
    with torch.no_grad(), attention_processor(edit.backbone, probe):
        edit.field(x, torch.full((4,), t), cond)
    return probe.probs


def test_word_swap_replaces_the_mapped_cross_attention_probabilities(sd15):
    field, encoder = sd15
    target_prompt = "a photo of a zebra on the grass"  # zebra: 5 letter tokens for the 1 of cat
    edit = p2p_edit(field, encoder, SOURCE, target_prompt, "replace", guidance=7.5, cross_replace_steps=0.5,
                    self_replace_steps=0.0)
    _, source_words = word_spans(encoder.prompt_tokens(SOURCE, 77).word_ids)
    _, target_words = word_spans(encoder.prompt_tokens(target_prompt, 77).word_ids)
    pairs = [(0, 0)]  # start token to start token
    for word, positions in target_words.items():  # same split: piece to piece; cat -> z, e, b, r, a: one to many
        sources = source_words[word]
        pairs += zip(sources, positions, strict=True) if len(sources) == len(positions) else [
            (sources[0], p) for p in positions]
    assert (5, 9) in pairs and (6, 10) in pairs and (12, 16) in pairs  # "on" and the last s of grass moved by 4
    source_columns, target_columns = map(list, zip(*pairs, strict=True))
    inside, unedited = evaluate(edit, edit.plan, 0.3), evaluate(edit, None, 0.3)
    outside, unedited_late = evaluate(edit, edit.plan, 0.7), evaluate(edit, None, 0.7)
    assert len(inside) == 4  # every attn2 of the tiny U-Net
    for name, probs in inside.items():
        torch.testing.assert_close(probs[1][..., target_columns], probs[0][..., source_columns], atol=1e-7, rtol=0)
        torch.testing.assert_close(probs[0], unedited[name][0], atol=1e-7, rtol=0)  # the source row is never edited
        torch.testing.assert_close(probs[2:], unedited[name][2:], atol=1e-7, rtol=0)  # nor the null rows
        own = unedited[name][1][..., target_columns]
        assert (own - probs[1][..., target_columns]).abs().max() > 1e-4, name  # the target's own maps differ
        late = outside[name]  # t past the window: the target attends with its own probabilities
        torch.testing.assert_close(late, unedited_late[name], atol=1e-7, rtol=0)
        assert (late[1][..., target_columns] - late[0][..., source_columns]).abs().max() > 1e-4, name


def test_refine_and_reweight_change_the_output_and_local_blend_runs(sd15):
    field, encoder = sd15
    x = noise()
    pair = torch.cat([x, x])
    refine = euler(p2p_edit(field, encoder, "a photo of a cat", "a photo of a red cat on the grass", "refine",
                            guidance=7.5), pair)
    assert torch.isfinite(refine).all()
    assert (refine[1:] - plain(field, encoder, "a photo of a red cat on the grass", x)).abs().max() > 1e-3
    reweight = euler(p2p_edit(field, encoder, SOURCE, SOURCE, "reweight", guidance=7.5, reweight_words="cat",
                              reweight_scale=4.0), pair)
    assert torch.isfinite(reweight).all() and (reweight[1] - reweight[0]).abs().max() > 1e-3
    blended = euler(p2p_edit(field, encoder, SOURCE, TARGET, guidance=7.5, blend_words="cat dog"), pair)
    assert torch.isfinite(blended).all() and (blended[1] - blended[0]).abs().max() > 1e-4
    nothing_changes = p2p_edit(field, encoder, SOURCE, TARGET, guidance=7.5, blend_words="cat dog", blend_start=0.0,
                               blend_threshold=1.0)
    out = euler(nothing_changes, pair)  # an empty mask pulls the target onto the source
    torch.testing.assert_close(out[1], out[0], atol=1e-5, rtol=0)


def test_word_swap_runs_on_sdxl(sdxl_folder):
    field, encoder = load(sdxl_folder)
    x = noise()
    edited = euler(p2p_edit(field, encoder, SOURCE, TARGET, guidance=5.0, cross_replace_steps=1.0), torch.cat([x, x]))
    # 4 rows vs 2 rows through the U-Net: equal up to the CPU kernels' batch-size rounding (1e-5 here)
    torch.testing.assert_close(edited[:1], plain(field, encoder, SOURCE, x, 5.0), atol=5e-5, rtol=1e-5)
    assert (edited[1:] - plain(field, encoder, TARGET, x, 5.0)).abs().max() > 1e-3


class _Ctx:
    device = "cpu"

    def progress(self, step, total, **info):
        pass


def test_attention_maps_label_clip_tokens(sd15):
    from nodes.solvers import Solver
    from nodes.solvers import euler as euler_step

    field, encoder = sd15
    image = attention_maps(_Ctx(), field, encoder, noise(), torch.linspace(0.02, 0.98, 4), "a photo of a cat",
                           7.5, Solver("euler", euler_step))
    assert image.shape == (1, 3, 64 + 14, 64 * 5)  # one tile per word token: a, photo, of, a, cat


def test_mm_dit_families_are_refused_clearly(sd3_folder):
    field, encoder = load(sd3_folder)
    with pytest.raises(ValueError, match="no cross-attention layer"):
        p2p_edit(field, encoder, SOURCE, TARGET)


# Workflows -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(builtin_registry, tmp_path_factory) -> Session:
    return Session(builtin_registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                   read_roots=[tmp_path_factory.getbasetemp()])


def configured(workflow: Workflow, folder: Path) -> Workflow:
    for address, value in {"model.path": str(folder), "noise.width": SIZE, "noise.height": SIZE,
                           "grid.steps": STEPS, "seed.seed": SEED}.items():
        workflow = workflow.set(address, value)
    return workflow


def test_disabled_edit_is_exactly_the_plain_generation(session, sd15_folder):
    edit = configured(Workflow.load(WORKFLOWS / "sd15_p2p_word_swap.json"), sd15_folder)
    edit = edit.set("edit.cross_replace_steps", 0.0).set("edit.self_replace_steps", 0.0)
    got = session.run(edit, outputs=["solve"]).value("solve.latent")
    assert got.shape == (2, 4, SIZE // 2, SIZE // 2)
    # The plain SD workflow generating both prompts from [noise; noise] evaluates the same batch layout.
    data = json.loads((WORKFLOWS / "sd15_text_to_image.json").read_text())
    data["nodes"]["pair"] = {"type": "core/p2p_pair", "inputs": {"noise": {"from": "noise", "output": "latent"}}}
    data["nodes"]["solve"]["inputs"]["noise"] = {"from": "pair", "output": "tensor"}
    both = configured(Workflow.from_dict(data), sd15_folder).set("prompt.text", f"{SOURCE}\n{TARGET}")
    assert torch.equal(got, session.run(both, outputs=["solve"]).value("solve.latent"))
    # One prompt at a time: the same numbers up to the CPU kernels' batch-size rounding.
    for row, prompt in enumerate((SOURCE, TARGET)):
        single = configured(Workflow.load(WORKFLOWS / "sd15_text_to_image.json"), sd15_folder)
        want = session.run(single.set("prompt.text", prompt), outputs=["solve"]).value("solve.latent")
        torch.testing.assert_close(got[row:row + 1], want, atol=1e-5, rtol=1e-5)


def test_sd15_word_swap_workflow_validates_and_runs_from_the_cli(builtin_registry, sd15_folder, tmp_path):
    path = WORKFLOWS / "sd15_p2p_word_swap.json"
    workflow = Workflow.load(path)
    assert shipped_problems(workflow, builtin_registry) == []  # all but model.path, left for the user
    assert workflow.nodes["model"].type == "core/load_pipeline"
    assert (workflow.nodes["edit"].inputs["source_prompt"], workflow.nodes["edit"].inputs["target_prompt"]) == (
        SOURCE, TARGET)
    settings = [f"model.path={sd15_folder}", f"noise.width={SIZE}", f"noise.height={SIZE}", "grid.steps=2"]
    command = [sys.executable, "-m", "nodegraph.cli", "run", str(path), "--out", str(tmp_path), "--device", "cpu",
               "--read-root", str(sd15_folder)]
    for setting in settings:
        command += ["--set", setting]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.glob("*.png")] == ["sd15_p2p_word_swap_00001.png"]
