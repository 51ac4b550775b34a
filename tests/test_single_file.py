"""Single-file checkpoints in the original layouts (core/load_checkpoint, core/load_denoiser_file).

The tiny SD1.5 / SDXL / SD3 / Flux folders are written back as the single .safetensors users download
(`original_layout`, checked to be the exact inverse of the loader's conversion); loading that file gives
exactly the folder's weights, path and prediction, and the shipped workflows give the folder's latents.
Bad files fail before any weight is read, each with an error that names the file and says what to do.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from nodegraph import Session, Workflow, WorkflowInvalid
from nodes.families.family import BUILTIN_FAMILIES, load_pipeline
from nodes.families.layouts import CONFIGS, sd_file
from nodes.families.loading import CheckpointError, ModelFolderError
from nodes.families.single_file import load_checkpoint, read_checkpoint, scheduler_path
from nodes.models.checkpoint import TensorHeader

from .original_layout import check_inverse, load_folder_part, original_parts, write_single_file

FAMILIES = {family.name: family for family in BUILTIN_FAMILIES}
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
WORKFLOW = {"sd": ("sd15_text_to_image.json", 16), "sdxl": ("sdxl_text_to_image.json", 16),
            "sd3": ("sd3_text_to_image.json", 16), "flux": ("flux_text_to_image.json", 32)}


@pytest.fixture(scope="module")
def folders(sd15_folder, sdxl_folder, sd3_folder, flux_folder) -> dict[str, Path]:
    return {"sd": sd15_folder, "sdxl": sdxl_folder, "sd3": sd3_folder, "flux": flux_folder}


@pytest.fixture(scope="module")
def files(folders, tmp_path_factory) -> dict[str, Path]:
    """Each tiny pipeline as one all-in-one original-layout file."""
    root = tmp_path_factory.mktemp("single_files")
    return {family: write_single_file(folder, family, root / f"{family}.safetensors")
            for family, folder in folders.items()}


@pytest.fixture(scope="module")
def session(builtin_registry, tmp_path_factory) -> Session:
    return Session(builtin_registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                   read_roots=[tmp_path_factory.getbasetemp()])


def load(file: Path, folder: Path, **inputs):
    return load_checkpoint(str(file), FAMILIES, torch.float32, "cpu", **{"tokenizers": str(folder),
                                                                         "config": str(folder), **inputs})


def assert_same_weights(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    mine, want = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == want.keys()
    for name, value in want.items():
        assert torch.equal(mine[name], value), name


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_the_original_layout_written_here_is_the_exact_inverse_of_the_loader(folders, family):
    for part, (_prefix, layout, original) in original_parts(folders[family], family).items():
        check_inverse(layout, original, load_folder_part(folders[family], part))


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_a_single_file_loads_exactly_the_folders_weights_path_and_prediction(folders, files, family):
    ours = load(files[family], folders[family])
    theirs = load_pipeline(str(folders[family]), FAMILIES, torch.float32, "cpu")
    assert ours.family.name == family
    for part in ("backbone", "vae", "text_encoder"):
        assert_same_weights(getattr(ours, part), getattr(theirs, part))
    assert ours.path.config() == theirs.path.config()
    assert ours.backbone.prediction == theirs.backbone.prediction


def run(session: Session, family: str, model: dict, steps: int = 3) -> torch.Tensor:
    """The family's shipped workflow with its model node replaced by `model`; the final latents."""
    name, size = WORKFLOW[family]
    data = json.loads((WORKFLOWS / name).read_text())
    data["nodes"]["model"] = model
    w = Workflow.from_dict(data)
    for address, value in {"noise.width": size, "noise.height": size, "grid.steps": steps, "seed.seed": 3,
                           "prompt.text": "a photo of the red cat"}.items():
        w = w.set(address, value)
    for key in ("width", "height", "target_width", "target_height"):
        for node_id in ("prompt", "null"):
            if family == "sdxl":
                w = w.set(f"{node_id}.{key}", size)
    return session.run(w, outputs=["solve"]).value("solve.latent")


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_a_workflow_on_the_single_file_gives_the_folders_latents(session, folders, files, family):
    folder = str(folders[family])
    want = run(session, family, {"type": "core/load_pipeline", "inputs": {"path": folder}})
    got = run(session, family, {"type": "core/load_checkpoint",
                                "inputs": {"file": str(files[family]), "tokenizers": folder, "config": folder}})
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_a_flux_transformer_file_takes_text_encoders_and_an_original_vae_file(session, folders, tmp_path):
    """FLUX.1 as released: the transformer alone (no prefix) and ae.safetensors, text encoders from a folder."""
    folder = folders["flux"]
    transformer = write_single_file(folder, "flux", tmp_path / "flux1-tiny.safetensors", ("transformer",), bare=True)
    ae = write_single_file(folder, "flux", tmp_path / "ae.safetensors", ("vae",), bare=True)
    with pytest.raises(ModelFolderError, match="holds no VAE: set input 'vae'"):
        load_checkpoint(str(transformer), FAMILIES, torch.float32, "cpu", text_encoders=str(folder))
    with pytest.raises(ModelFolderError, match="holds no text_encoder, text_encoder_2 .*set input 'text_encoders'"):
        load_checkpoint(str(transformer), FAMILIES, torch.float32, "cpu", vae=str(ae))
    inputs = {"file": str(transformer), "text_encoders": str(folder), "vae": str(ae), "config": str(folder)}
    got = run(session, "flux", {"type": "core/load_checkpoint", "inputs": inputs})
    want = run(session, "flux", {"type": "core/load_pipeline", "inputs": {"path": str(folder)}})
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_the_denoiser_node_loads_only_the_backbone_and_path(session, folders, files):
    w = Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "nodes": {"unet": {
        "type": "core/load_denoiser_file", "inputs": {"file": str(files["sdxl"]), "config": str(folders["sdxl"])}}}})
    result = session.run(w, outputs=["unet"])
    assert_same_weights(result.value("unet.backbone").model, load_folder_part(folders["sdxl"], "unet"))
    assert result.value("unet.path").config()["kind"] == "ddpm"


def test_sd3_clip_l_without_a_projection_gets_the_identity(folders):
    """SD3's own files store CLIP-L without text_projection: its pooled output is used unprojected."""
    _prefix, layout, original = original_parts(folders["sd3"], "sd3")["text_encoder"]
    del original["text_projection.weight"]
    state = layout.convert(original, load_folder_part(folders["sd3"], "text_encoder"))
    assert torch.equal(state["text_projection.weight"], torch.eye(state["text_projection.weight"].shape[0]))


def test_our_flux_conversion_equals_diffusers_at_flux1_width():
    """diffusers' own Flux conversion assumes FLUX.1's width (3072), so ours (which reads the width off the
    tensors) is checked against it there. Only dim 0 matters to either, so each tensor is one column of
    distinct numbers: no real-size allocation."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from nodes.families.original_parts import FLUX_DIT

    from .original_layout import flux_original

    config = {**json.loads((CONFIGS / "flux" / "transformer.json").read_text()), "num_layers": 2,
              "num_single_layers": 2}
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in flux_original(FLUX_DIT.build(config).state_dict()).items()}
    tensors, start = {}, 0
    for name, shape in shapes.items():
        column = torch.arange(start, start + shape[0], dtype=torch.float64)
        tensors[name] = column[:, None] if len(shape) > 1 else column
        start += shape[0]
    ours = FLUX_DIT.convert(dict(tensors), torch.nn.Module())
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(tensors))
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name


# Configs from shapes ---------------------------------------------------------------------------------------------

DERIVED = {  # the config keys each layout reads off the tensors
    "unet": ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
             "up_block_types", "cross_attention_dim", "use_linear_projection", "addition_embed_type",
             "addition_time_embed_dim", "projection_class_embeddings_input_dim", "transformer_layers_per_block"),
    "vae": ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "latent_channels",
            "use_quant_conv", "use_post_quant_conv"),
    "clip": ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings"),
    "t5": ("vocab_size", "d_model", "d_ff", "d_kv", "num_heads", "num_layers", "relative_attention_num_buckets",
           "feed_forward_proj"),
    "transformer": ("in_channels", "out_channels", "num_layers", "joint_attention_dim", "pooled_projection_dim",
                    "patch_size"),
}


def _kind(part: str, family: str) -> str:
    if part.startswith("text_encoder"):
        return "t5" if (family, part) in (("sd3", "text_encoder_3"), ("flux", "text_encoder_2")) else "clip"
    return part


def _plain(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_sizes_come_from_the_tensor_shapes_not_the_shipped_configs(folders, files, family):
    """With the real models' shipped configs as the base, the tiny file's sizes are read from its tensors."""
    checkpoint = read_checkpoint(str(files[family]), FAMILIES)
    context = {n: h.shape for n, h in checkpoint.header.items()}
    for part, layout in checkpoint.plan.parts.items():
        shapes = {n[len(layout.prefix):]: checkpoint.header[n].shape for n in checkpoint.tensors_of(part)}
        base = json.loads((checkpoint.plan.configs / f"{part}.json").read_text())
        derived = layout.layout.config(shapes, base, context)
        tiny = json.loads((folders[family] / part / "config.json").read_text())
        for key in DERIVED[_kind(part, family)]:
            if key in tiny:
                assert _plain(derived.get(key)) == _plain(tiny[key]), (part, key)


VARIANTS = [("sd1", "sd"), ("sd2", "sd"), ("sdxl", "sdxl"), ("sd3", "sd3"), ("flux", "flux")]


def _meta_original(variant: str, family: str) -> dict[str, tuple[str, object, dict[str, tuple[int, ...]]]]:
    """The real model of each shipped config, built on the meta device and written in the original layout:
    part -> (prefix, layout, original name -> shape)."""
    from nodes.families import original_parts as o

    from . import original_layout as ol

    def meta(part: str, layout) -> dict[str, torch.Tensor]:
        config = json.loads((CONFIGS / variant / f"{part}.json").read_text())
        with torch.device("meta"):
            return layout.build(config).state_dict()

    unet = "model.diffusion_model."
    found = {}
    if family in ("sd", "sdxl"):
        config = json.loads((CONFIGS / variant / "unet.json").read_text())
        found["unet"] = (unet, o.LDM_UNET, ol.unet_original(meta("unet", o.LDM_UNET), config["layers_per_block"]))
    elif family == "sd3":
        found["transformer"] = (unet, o.SD3_MMDIT, ol.sd3_original(meta("transformer", o.SD3_MMDIT)))
    else:
        found["transformer"] = ("", o.FLUX_DIT, ol.flux_original(meta("transformer", o.FLUX_DIT)))
    found["vae"] = ("first_stage_model.", o.LDM_VAE, ol.vae_original(meta("vae", o.LDM_VAE), 4))
    if variant == "sd1":
        found["text_encoder"] = ("cond_stage_model.transformer.", o.CLIP_TEXT,
                                 ol.clip_original(meta("text_encoder", o.CLIP_TEXT)))
    elif variant == "sd2":  # open_clip's 24 blocks; diffusers keeps 23 (the penultimate layer's output)
        tower = ol.open_clip_original({**meta("text_encoder", o.CLIP_TEXT),
                                       "text_projection.weight": torch.empty(1024, 1024, device="meta")})
        tower.update({k.replace(".22.", ".23."): v for k, v in tower.items() if ".resblocks.22." in k})
        found["text_encoder"] = ("cond_stage_model.model.", o.OPEN_CLIP_PENULTIMATE, tower)
    elif family == "sdxl":
        found["text_encoder"] = ("conditioner.embedders.0.transformer.", o.CLIP_TEXT,
                                 ol.clip_original(meta("text_encoder", o.CLIP_TEXT)))
        found["text_encoder_2"] = ("conditioner.embedders.1.model.", o.OPEN_CLIP_PROJECTED,
                                   ol.open_clip_original(meta("text_encoder_2", o.OPEN_CLIP_PROJECTED)))
    elif family == "sd3":
        for part, key in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")):
            found[part] = (f"text_encoders.{key}.transformer.", o.CLIP_TEXT_PROJECTED,
                           ol.clip_original(meta(part, o.CLIP_TEXT_PROJECTED)))
        found["text_encoder_3"] = ("text_encoders.t5xxl.transformer.", o.T5_ENCODER,
                                   ol.t5_original(meta("text_encoder_3", o.T5_ENCODER)))
    else:
        found["text_encoder"] = ("text_encoders.clip_l.transformer.", o.CLIP_TEXT,
                                 ol.clip_original(meta("text_encoder", o.CLIP_TEXT)))
        found["text_encoder_2"] = ("text_encoders.t5xxl.transformer.", o.T5_ENCODER,
                                   ol.t5_original(meta("text_encoder_2", o.T5_ENCODER)))
    return {part: (prefix, layout, {k: tuple(v.shape) for k, v in tensors.items()})
            for part, (prefix, layout, tensors) in found.items()}


@pytest.mark.parametrize("variant,family", VARIANTS)
def test_real_size_shapes_give_back_the_shipped_configs(variant, family):
    """Shapes of the real models (built on the meta device, nothing allocated) lead the family reader to
    the right config folder and the derivation back to the same architecture, heads included."""
    found = _meta_original(variant, family)
    header = {prefix + name: shape for prefix, _layout, shapes in found.values() for name, shape in shapes.items()}
    context = dict(header)
    for part, (_prefix, layout, shapes) in found.items():
        base = json.loads((CONFIGS / variant / f"{part}.json").read_text())
        derived = layout.config(shapes, base, context)
        with torch.device("meta"):
            rebuilt = {k: tuple(v.shape) for k, v in layout.build(derived).state_dict().items()}
            shipped = {k: tuple(v.shape) for k, v in layout.build(base).state_dict().items()}
        assert rebuilt == shipped, part
        for key in ("attention_head_dim", "num_attention_heads", "num_heads"):
            assert _plain(derived.get(key)) == _plain(base.get(key)), (part, key)
    plan = FAMILIES[family].single_file({name: TensorHeader(shape, "F16") for name, shape in header.items()})
    assert plan.configs.name == variant and set(plan.parts) == set(found)


def test_the_optional_folders_are_model_paths_confined_when_set_and_skipped_when_unset(builtin_registry, session,
                                                                                      files):
    node = builtin_registry.nodes["core/load_checkpoint"]
    assert node.display_name == "Load model (single file)"
    paths = {name for name, spec in node.inputs.items() if spec.access is not None}
    assert paths == {"file", "tokenizers", "text_encoders", "vae", "config"}
    workflow = {"format": "nodegraph/workflow", "version": 1,
                "nodes": {"model": {"type": "core/load_checkpoint", "inputs": {"file": str(files["sd"])}}}}
    session.compile(Workflow.from_dict(workflow))  # unset folders: nothing to confine
    workflow["nodes"]["model"]["inputs"]["tokenizers"] = "/etc"
    with pytest.raises(WorkflowInvalid) as caught:
        session.compile(Workflow.from_dict(workflow))
    assert [(p.kind, p.input) for p in caught.value.problems] == [("path_refused", "tokenizers")]


def test_v_prediction_is_read_from_a_v_pred_marker_and_sd2_defaults_to_v(files):
    header = dict(read_checkpoint(str(files["sd"]), FAMILIES).header)
    assert sd_file(header).prediction is None
    assert sd_file({**header, "v_pred": TensorHeader((0,), "F32")}).prediction == "v"
    assert sd_file({**header, "cond_stage_model.model.token_embedding.weight": TensorHeader((49408, 1024), "F16")}
                   ).prediction == "v"


def test_v_marked_sd_file_loads_as_v_prediction_and_the_input_overrides_it(folders, tmp_path):
    file = write_single_file(folders["sd"], "sd", tmp_path / "v.safetensors", extra={"v_pred": torch.zeros(0)})
    checkpoint = read_checkpoint(str(file), FAMILIES)
    assert scheduler_path(checkpoint, "auto")[1] == "v"
    assert scheduler_path(checkpoint, "epsilon")[1] == "epsilon"


def test_flux_schnell_has_no_guidance_embedding_and_a_static_schedule(folders, tmp_path):
    schnell = {k: v for k, v in original_parts(folders["flux"], "flux")["transformer"][2].items()
               if not k.startswith("guidance_in.")}
    save_file(schnell, str(tmp_path / "schnell.safetensors"))
    checkpoint = read_checkpoint(str(tmp_path / "schnell.safetensors"), FAMILIES)
    path, prediction = scheduler_path(checkpoint, "auto")
    assert prediction == "velocity" and not path.dynamic and path.shift == 1.0
    with pytest.raises(ValueError, match="predicts flow velocity"):
        scheduler_path(checkpoint, "v")
    from nodes.families.single_file import load_file_backbone

    backbone, _ = load_file_backbone(checkpoint, "auto", folders["flux"], torch.float32, "cpu")
    assert backbone.guidance_embeds is False


# Bad inputs: each refused before any weight is read, with the file named ---------------------------------------


def test_an_unknown_layout_lists_every_family_tried_and_why_not(tmp_path):
    file = tmp_path / "other.safetensors"
    save_file({"blocks.0.weight": torch.zeros(2)}, str(file))
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(str(file), FAMILIES)
    message = str(caught.value)
    assert str(file) in message
    for reason in ("sd: no key model.diffusion_model.input_blocks.0.0.weight",
                   "sdxl: no key model.diffusion_model.input_blocks.0.0.weight",
                   "sd3: no key (model.diffusion_model.)joint_blocks.0.x_block.attn.qkv.weight",
                   "flux: no key (model.diffusion_model.)double_blocks.0.img_attn.qkv.weight"):
        assert reason in message


def test_an_sdxl_unet_without_its_size_embedding_is_not_taken_for_sdxl(files, tmp_path):
    header = read_checkpoint(str(files["sd"]), FAMILIES).header
    assert "label_emb" in FAMILIES["sdxl"].single_file(header)


class Boom:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_checkpoint_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    for suffix in (".ckpt", ".pt"):
        file = tmp_path / f"model{suffix}"
        file.write_bytes(pickle.dumps(Boom(marker)))
        with pytest.raises(CheckpointError, match="pickled checkpoint .*never unpickles"):
            read_checkpoint(str(file), FAMILIES)
    assert not marker.exists()


def test_a_corrupt_header_is_refused(tmp_path):
    file = tmp_path / "corrupt.safetensors"
    file.write_bytes(struct.pack("<Q", 20) + b"{not json at all...")
    with pytest.raises(CheckpointError, match=f"{file}.*corrupt safetensors header"):
        read_checkpoint(str(file), FAMILIES)
    file.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_checkpoint(str(file), FAMILIES)


def test_a_header_claiming_huge_tensors_in_a_small_file_is_refused_before_allocation(tmp_path):
    file = tmp_path / "huge.safetensors"
    name = "model.diffusion_model.input_blocks.0.0.weight"
    for entry in ({"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]},  # shape vs its bytes
                  {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}):  # vs the file
        header = json.dumps({name: entry}).encode()
        file.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
        with pytest.raises(CheckpointError, match=f"{file}.*corrupt safetensors"):
            read_checkpoint(str(file), FAMILIES)


def test_a_part_larger_than_its_own_tensors_is_refused_on_the_meta_device(files, folders, tmp_path):
    """What shapes do not fix comes from the config, which must not make the model outgrow the file: a
    `config` folder asking for 10 million class embeddings is stopped while building on the meta device."""
    for part in ("unet", "vae", "text_encoder"):
        (tmp_path / part).mkdir()
        config = json.loads((folders["sd"] / part / "config.json").read_text())
        if part == "unet":
            config["num_class_embeds"] = 10_000_000
        (tmp_path / part / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{files['sd']}.*the unet .* config asks for at least .*refused before "
                                              "allocating anything"):
        load(files["sd"], folders["sd"], config=str(tmp_path))


def test_a_missing_file_and_a_hub_id_are_explained(tmp_path):
    with pytest.raises(ModelFolderError, match=f"no file '{tmp_path / 'absent.safetensors'}'"):
        read_checkpoint(str(tmp_path / "absent.safetensors"), FAMILIES)
    with pytest.raises(ModelFolderError, match="hub name: nodegraph never downloads"):
        read_checkpoint("stabilityai/sdxl-turbo", FAMILIES)
    with pytest.raises(ModelFolderError, match="is a folder; this input takes one .safetensors file"):
        read_checkpoint(str(tmp_path), FAMILIES)


def test_missing_tokenizers_are_explained_before_anything_loads(files, folders, tmp_path):
    with pytest.raises(ModelFolderError, match="holds sdxl text encoders but no tokenizers .*'tokenizers' to a "
                                               "folder holding tokenizer/, tokenizer_2/"):
        load_checkpoint(str(files["sdxl"]), FAMILIES, torch.float32, "cpu")
    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(ModelFolderError, match="has no tokenizer_2/ folder; sdxl needs tokenizer/, tokenizer_2/"):
        load(files["sdxl"], folders["sdxl"], tokenizers=str(tmp_path))


def test_text_encoders_of_another_family_are_refused(files, folders):
    with pytest.raises(CheckpointError, match="is a sd pipeline, the file a sdxl model"):
        load(files["sdxl"], folders["sdxl"], text_encoders=str(folders["sd"]))
