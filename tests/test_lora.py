"""core/apply_lora on tiny random-weight SD1.5 and SDXL folders: the same latents as diffusers' own LoRA loading
(peft) for the same file and scale, every layout read alike, the cached base model never written, strength 0
exactly the base, and a strength change re-running from the LoRA node only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nodegraph import NodeFailed, Session, Workflow, validate
from nodes.families.lora import with_parameters

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
PROMPT = "a photo of the red cat"
SEED = 3
STEPS = 4
RANK = 4
ALPHA = 8.0
RESNETS_ORIGINAL = {"down_blocks.0.resnets.0.conv1": "input_blocks.1.0.in_layers.2",
                    "mid_block.resnets.0.time_emb_proj": "middle_block.0.emb_layers.1"}
SD15_ORIGINAL = {"down_blocks.0.attentions.0": "input_blocks.1.1", "mid_block.attentions.0": "middle_block.1",
                 "up_blocks.1.attentions.0": "output_blocks.2.1", "up_blocks.1.attentions.1": "output_blocks.3.1",
                 **RESNETS_ORIGINAL}
SDXL_ORIGINAL = {"down_blocks.1.attentions.0": "input_blocks.3.1", "mid_block.attentions.0": "middle_block.1",
                 "up_blocks.0.attentions.0": "output_blocks.0.1", "up_blocks.0.attentions.1": "output_blocks.1.1",
                 **RESNETS_ORIGINAL}
"""The tiny U-Nets' adapted blocks (layers_per_block 1) in the original SD layout's names, as kohya writes
SDXL LoRAs."""


# LoRAs made here: random A and B for chosen layers, written in each layout --------------------------------------


def _adapted_layers(model: nn.Module, names: list[str], seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)} with A (r, in[, kh, kw]) and B (out, r[, 1, 1]), as trainers shape them."""
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name in names:
        weight = model.get_submodule(name).weight
        kernel = tuple(weight.shape[2:])
        down = torch.randn(RANK, weight.shape[1], *kernel, generator=generator) * 0.1
        up = torch.randn(weight.shape[0], RANK, *(1,) * len(kernel), generator=generator) * 0.1
        layers[name] = (down, up)
    return layers


def unet_layers(unet: nn.Module, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Attention, feed-forward and projections of every transformer block (Linear and 1x1 conv), one 3x3 conv
    and one time projection."""
    names = [n for n, m in unet.named_modules() if ".attentions." in n and isinstance(m, (nn.Linear, nn.Conv2d))]
    return _adapted_layers(unet, [*names, "down_blocks.0.resnets.0.conv1", "mid_block.resnets.0.time_emb_proj"],
                           seed)


def text_layers(text_encoder: nn.Module, seed: int = 1) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    names = [n for n, m in text_encoder.named_modules() if isinstance(m, nn.Linear) and ".layers." in n]
    return _adapted_layers(text_encoder, names, seed)


def write_peft(file: Path, parts: dict[str, dict], alpha: float | None = ALPHA) -> Path:
    """diffusers' layout: "<part>.<module>.lora_A.weight"; alpha in the LoraConfig header diffusers writes."""
    tensors, config = {}, {}
    for part, layers in parts.items():
        for name, (down, up) in layers.items():
            tensors[f"{part}.{name}.lora_A.weight"] = down
            tensors[f"{part}.{name}.lora_B.weight"] = up
        if alpha is not None:
            config.update({f"{part}.r": RANK, f"{part}.lora_alpha": alpha, f"{part}.target_modules": sorted(layers)})
    save_file(tensors, file, metadata={"lora_adapter_metadata": json.dumps(config)} if config else None)
    return file


KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te1_text_model_", "text_encoder_2": "lora_te2_text_model_"}


def write_kohya(file: Path, parts: dict[str, dict], alpha: float = ALPHA, sd_original: dict[str, str] | None = None,
                one_text_encoder: bool = True) -> Path:
    """kohya's layout: "lora_unet_<module with underscores>.lora_down.weight", ".lora_up.weight", ".alpha"."""
    tensors = {}
    for part, layers in parts.items():
        prefix = "lora_te_text_model_" if part == "text_encoder" and one_text_encoder else KOHYA_PREFIX[part]
        for name, (down, up) in layers.items():
            if sd_original and part == "unet":
                name = next((name.replace(a, b) for a, b in sd_original.items() if name.startswith(a)), name)
            key = prefix + name.removeprefix("text_model.").replace(".", "_")
            tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(alpha)}
    save_file(tensors, file)
    return file


def write_older_diffusers(file: Path, parts: dict[str, dict]) -> Path:
    """Older diffusers names: attention processors' "to_q_lora.down.weight", "lora_linear_layer", no alpha."""
    old = {"to_q": "to_q_lora", "to_k": "to_k_lora", "to_v": "to_v_lora", "to_out.0": "to_out_lora",
           "q_proj": "to_q_lora", "k_proj": "to_k_lora", "v_proj": "to_v_lora", "out_proj": "to_out_lora"}
    tensors = {}
    for part, layers in parts.items():
        for name, (down, up) in layers.items():
            head, last = name.rsplit(".", 1) if not name.endswith("to_out.0") else (name[:-9], "to_out.0")
            if last in old and part == "unet":
                key = f"unet.{head}.processor.{old[last]}"
            elif last in old:
                key = f"text_encoder.text_model.{head}.{old[last]}"
            else:
                key = f"{part}.{'text_model.' if part != 'unet' else ''}{name}.lora" + (
                    "_linear_layer" if part != "unet" else "")
            tensors |= {f"{key}.down.weight": down, f"{key}.up.weight": up}
    save_file(tensors, file)
    return file


# Runs -------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(builtin_registry, tmp_path_factory) -> Session:
    return Session(builtin_registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                   read_roots=[tmp_path_factory.getbasetemp()])


@pytest.fixture(scope="module")
def sd15_parts(sd15_folder) -> dict[str, dict]:
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(sd15_folder / "unet")
    text_encoder = CLIPTextModel.from_pretrained(sd15_folder / "text_encoder")
    return {"unet": unet_layers(unet), "text_encoder": text_layers(text_encoder)}


@pytest.fixture(scope="module")
def loras(tmp_path_factory, sd15_parts) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {"peft": write_peft(folder / "peft.safetensors", sd15_parts),
            "peft_no_alpha": write_peft(folder / "peft_no_alpha.safetensors", sd15_parts, alpha=None),
            "kohya": write_kohya(folder / "kohya.safetensors", sd15_parts),
            "kohya_sd_original": write_kohya(folder / "kohya_sd.safetensors", sd15_parts,
                                                     sd_original=SD15_ORIGINAL),
            "older_diffusers": write_older_diffusers(folder / "older.safetensors", sd15_parts)}


def lora_workflow(folder: Path, lora: Path, strength: float, strength_text: float | None = None) -> Workflow:
    w = Workflow.load(WORKFLOWS / "sd15_lora.json")
    settings = {"model.path": str(folder), "lora.file": str(lora), "lora.strength": strength,
                "lora.strength_text": strength if strength_text is None else strength_text,
                "noise.width": 16, "noise.height": 16, "grid.steps": STEPS, "seed.seed": SEED, "prompt.text": PROMPT,
                "cfg.scale": 5.0}
    for address, value in settings.items():
        w = w.set(address, value)
    return w


def latents(session: Session, workflow: Workflow) -> torch.Tensor:
    return session.run(workflow, outputs=["solve"]).value("solve.latent")


def base_latents(session: Session, folder: Path) -> torch.Tensor:
    w = Workflow.load(WORKFLOWS / "sd15_text_to_image.json")
    settings = {"model.path": str(folder), "noise.width": 16, "noise.height": 16, "grid.steps": STEPS,
                "seed.seed": SEED, "prompt.text": PROMPT, "cfg.scale": 5.0}
    for address, value in settings.items():
        w = w.set(address, value)
    return latents(session, w)


def diffusers_latents(folder: Path, lora: Path, scale: float) -> torch.Tensor:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    pipe.fuse_lora(lora_scale=scale)
    return pipe(PROMPT, height=16, width=16, num_inference_steps=STEPS, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images


# Tests -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["peft", "kohya"])
def test_sd15_lora_equals_diffusers_load_lora_weights(session, sd15_folder, loras, layout):
    got = latents(session, lora_workflow(sd15_folder, loras[layout], 0.7))
    want = diffusers_latents(sd15_folder, loras[layout], 0.7)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, base_latents(session, sd15_folder), atol=1e-3)


@pytest.mark.parametrize("layout,same_as", [("kohya", "peft"), ("kohya_sd_original", "kohya"),
                                            ("older_diffusers", "peft_no_alpha")])
def test_every_layout_reads_as_its_peft_equivalent(session, sd15_folder, loras, layout, same_as):
    got = latents(session, lora_workflow(sd15_folder, loras[layout], 1.3))
    torch.testing.assert_close(got, latents(session, lora_workflow(sd15_folder, loras[same_as], 1.3)),
                               atol=1e-6, rtol=1e-6)


def test_strength_zero_is_the_base_model_exactly(session, sd15_folder, loras):
    base = base_latents(session, sd15_folder)
    assert torch.equal(latents(session, lora_workflow(sd15_folder, loras["kohya"], 0.0)), base)
    assert not torch.equal(latents(session, lora_workflow(sd15_folder, loras["kohya"], 0.0, 0.5)), base)
    assert not torch.equal(latents(session, lora_workflow(sd15_folder, loras["kohya"], 0.5, 0.0)), base)


def test_the_cached_base_model_is_never_written(session, sd15_folder, loras):
    w = lora_workflow(sd15_folder, loras["peft"], 1.5)
    base = session.run(w, outputs=["model"])["model"]
    before = {name: p.clone() for part in (base["backbone"], base["text_encoder"])
              for name, p in part.named_parameters()}
    result = session.run(w, outputs=["solve", "model", "lora"])
    assert result["model"]["backbone"] is base["backbone"] and "model" in result.cached
    after = {name: p for part in (base["backbone"], base["text_encoder"]) for name, p in part.named_parameters()}
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    patched = result["lora"]["backbone"]
    shared = {n for n, p in patched.named_parameters() if p is dict(base["backbone"].named_parameters())[n]}
    adapted = {f"model.{m}.weight" for m in unet_layers(base["backbone"].model)}
    assert {n for n, _ in patched.named_parameters()} - shared == adapted  # only the adapted layers are new
    assert patched.training_info == base["backbone"].training_info and patched.prediction == "epsilon"


def test_changing_the_strength_reruns_from_the_lora_node_only(session, sd15_folder, loras):
    w = lora_workflow(sd15_folder, loras["kohya"], 0.4)
    session.run(w)
    again = session.run(w.set("lora.strength", 0.9))
    assert {"model", "noise", "grid"} <= set(again.cached)
    assert {"lora", "prompt", "null", "field", "cfg", "solve"} <= set(again.ran) and "model" not in again.ran


def test_chained_loras_compose(session, sd15_folder, loras):
    """Two nodes at strength s apply the same layers twice: W + 2 s scale B A, as one node at 2 s."""
    data = lora_workflow(sd15_folder, loras["peft"], 0.3).to_dict()
    data["nodes"]["lora2"] = {"type": "core/apply_lora", "inputs": {
        "backbone": {"from": "lora", "output": "backbone"}, "text_encoder": {"from": "lora", "output": "text_encoder"},
        "file": str(loras["peft"]), "strength": 0.3, "strength_text": 0.3}}
    data["nodes"]["field"]["inputs"]["backbone"] = {"from": "lora2", "output": "backbone"}
    for node in ("prompt", "null"):
        data["nodes"][node]["inputs"]["encoder"] = {"from": "lora2", "output": "text_encoder"}
    w = Workflow.from_dict(data)
    twice = latents(session, w)
    torch.testing.assert_close(twice, latents(session, lora_workflow(sd15_folder, loras["peft"], 0.6)),
                               atol=1e-4, rtol=1e-4)


def test_the_sd15_lora_workflow_asks_only_for_the_model_and_the_lora(builtin_registry):
    problems = validate(Workflow.load(WORKFLOWS / "sd15_lora.json"), builtin_registry)
    assert [(p.kind, p.node, p.input) for p in problems] == [("missing_input", "lora", "file"),
                                                             ("missing_input", "model", "path")]
    messages = {p.node: p.message for p in problems}
    assert "--set lora.file=" in messages["lora"] and ".safetensors" in messages["lora"]
    assert "--set model.path=" in messages["model"]


# Errors ------------------------------------------------------------------------------------------------------------


def run_lora(session: Session, folder: Path, file: Path, events: list | None = None, **settings) -> dict:
    w = lora_workflow(folder, file, 1.0)
    for name, value in settings.items():
        w = w.set(f"lora.{name}", value)
    return session.run(w, outputs=["lora"], on_event=events.append if events is not None else None)["lora"]


def test_unmatched_layers_are_an_error_naming_them_and_the_layout(session, sd15_folder, sd15_parts, tmp_path):
    down, up = sd15_parts["unet"]["down_blocks.0.attentions.0.proj_in"]
    bogus = {"unet": {**sd15_parts["unet"], "down_blocks.7.attentions.0.proj_in": (down.clone(), up.clone())},
             "text_encoder": sd15_parts["text_encoder"]}
    file = write_kohya(tmp_path / "bogus.safetensors", bogus)
    with pytest.raises(NodeFailed, match=r"kohya layout.*1 LoRA layer\(s\) match no layer.*"
                                         r"unet\.down_blocks\.7\.attentions\.0\.proj_in"):
        run_lora(session, sd15_folder, file)
    events = []
    out = run_lora(session, sd15_folder, file, events, unmatched="warn")
    assert any(e.kind == "warning" and "down_blocks.7" in e.message for e in events)
    assert out["backbone"] is not None


def test_a_lora_for_another_size_names_the_layer_and_both_shapes(session, sd15_folder, sd15_parts, tmp_path):
    name = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    down, up = sd15_parts["unet"][name]
    wrong = {"unet": {name: (torch.zeros(RANK, 48), up)}}
    file = write_peft(tmp_path / "other.safetensors", wrong)
    with pytest.raises(NodeFailed, match=rf"layer 'unet\.{name}': the model's weight is \(32, 32\) but the LoRA's "
                                         r"up \(B\) \(32, 4\) times down \(A\) \(4, 48\)"):
        run_lora(session, sd15_folder, file)
    assert down.shape == (RANK, 32)


@pytest.mark.parametrize("name,content,match", [
    ("lora.ckpt", b"pickle", r"\.safetensors files only"),
    ("lora.safetensors", b"garbage", r"not a readable safetensors file"),
])
def test_files_other_than_safetensors_are_refused(session, sd15_folder, tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(NodeFailed, match=match):
        run_lora(session, sd15_folder, tmp_path / name)


def test_dora_is_refused_rather_than_misapplied(session, sd15_folder, loras, tmp_path):
    from safetensors.torch import load_file

    tensors = load_file(loras["kohya"])
    key = next(k for k in tensors if k.endswith(".lora_down.weight"))
    tensors[key.replace(".lora_down.weight", ".dora_scale")] = torch.ones(1, 32)
    save_file(tensors, tmp_path / "dora.safetensors")
    with pytest.raises(NodeFailed, match="DoRA"):
        run_lora(session, sd15_folder, tmp_path / "dora.safetensors")


def test_text_encoder_layers_without_a_linked_encoder_are_a_warning(session, sd15_folder, loras):
    w = lora_workflow(sd15_folder, loras["peft"], 1.0)
    del w.nodes["lora"].inputs["text_encoder"]
    for node in ("prompt", "null"):
        w = w.set(f"{node}.encoder", {"from": "model", "output": "text_encoder"})
    events = []
    session.run(w, outputs=["lora"], on_event=events.append)
    assert any(e.kind == "warning" and "link 'text_encoder'" in e.message for e in events)


# The copy-on-write twin --------------------------------------------------------------------------------------------


def test_with_parameters_shares_everything_but_the_replaced_weights():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(3, 4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2))
    before = {n: p.clone() for n, p in base.state_dict().items()}
    twin = with_parameters(base, {"1.0.weight": torch.ones(4, 4)})
    again = with_parameters(twin, {"2.weight": torch.zeros(2, 4)})
    assert all(torch.equal(before[n], p) for n, p in base.state_dict().items())
    assert twin[0] is base[0] and twin[1][1] is base[1][1] and twin[2] is base[2]
    assert twin[1][0] is not base[1][0] and twin[1][0].bias is base[1][0].bias
    assert torch.equal(twin[1][0].weight, torch.ones(4, 4)) and torch.equal(again[1][0].weight, torch.ones(4, 4))
    assert torch.equal(again[2].weight, torch.zeros(2, 4)) and not torch.equal(twin[2].weight, torch.zeros(2, 4))
    x = torch.randn(5, 3)
    base.eval(), twin.eval()
    expected = base[2](base[1][1](x @ base[0].weight.T + base[0].bias) @ torch.ones(4, 4).T + base[1][0].bias)
    torch.testing.assert_close(twin(x), expected)
    with pytest.raises(KeyError, match="'0.scale' is not a parameter"):
        with_parameters(base, {"0.scale": torch.ones(1)})


# SDXL: kohya file with the original SD block names and both text encoders (lora_te1_, lora_te2_) ------------------


def with_lora(workflow: Workflow, file: Path, strength: float) -> Workflow:
    """`workflow` with core/apply_lora between the loader "model" and every user of its backbone and encoder."""
    data = workflow.to_dict()
    for node in data["nodes"].values():
        for name, value in node["inputs"].items():
            if isinstance(value, dict) and value.get("from") == "model" and value["output"] in ("backbone",
                                                                                                  "text_encoder"):
                node["inputs"][name] = {"from": "lora", "output": value["output"]}
    data["nodes"]["lora"] = {"type": "core/apply_lora", "inputs": {
        "backbone": {"from": "model", "output": "backbone"},
        "text_encoder": {"from": "model", "output": "text_encoder"},
        "file": str(file), "strength": strength, "strength_text": strength}}
    return Workflow.from_dict(data)


def test_sdxl_kohya_lora_with_sd_original_names_equals_diffusers(session, sdxl_folder, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    parts = {"unet": unet_layers(pipe.unet), "text_encoder": text_layers(pipe.text_encoder),
             "text_encoder_2": text_layers(pipe.text_encoder_2, seed=2)}
    file = write_kohya(tmp_path / "sdxl.safetensors", parts, sd_original=SDXL_ORIGINAL, one_text_encoder=False)
    w = Workflow.load(WORKFLOWS / "sdxl_text_to_image.json")
    settings = {"model.path": str(sdxl_folder), "noise.width": 16, "noise.height": 16, "grid.steps": STEPS,
                "seed.seed": SEED, "prompt.text": PROMPT,
                **{f"{n}.{k}": 16 for n in ("prompt", "null") for k in ("width", "height", "target_width",
                                                                       "target_height")}}
    for address, value in settings.items():
        w = w.set(address, value)
    got = latents(session, with_lora(w, file, 0.8))
    pipe.load_lora_weights(str(tmp_path), weight_name=file.name)
    pipe.fuse_lora(lora_scale=0.8)
    want = pipe(PROMPT, height=16, width=16, num_inference_steps=STEPS, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, latents(session, w), atol=1e-3)


# Flux: a peft-layout LoRA on the transformer's blocks and on CLIP ---------------------------------------------------


def test_flux_peft_lora_equals_diffusers(session, flux_folder, tmp_path):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(flux_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    blocks = [n for n, m in pipe.transformer.named_modules() if isinstance(m, nn.Linear) and "transformer_blocks." in n]
    parts = {"transformer": _adapted_layers(pipe.transformer, blocks, seed=0),
             "text_encoder": text_layers(pipe.text_encoder)}
    file = write_peft(tmp_path / "flux.safetensors", parts)
    w = Workflow.load(WORKFLOWS / "flux_text_to_image.json")
    settings = {"model.path": str(flux_folder), "noise.width": 32, "noise.height": 32, "grid.steps": STEPS,
                "seed.seed": SEED, "prompt.text": PROMPT, "flux_guidance.guidance": 4.0}
    for address, value in settings.items():
        w = w.set(address, value)
    got = latents(session, with_lora(w, file, 0.6))
    pipe.load_lora_weights(str(tmp_path), weight_name=file.name)
    pipe.fuse_lora(components=["transformer", "text_encoder"], lora_scale=0.6)
    packed = pipe(PROMPT, height=32, width=32, num_inference_steps=STEPS, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    want = pipe._unpack_latents(packed, 32, 32, pipe.vae_scale_factor)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, latents(session, w), atol=1e-3)
