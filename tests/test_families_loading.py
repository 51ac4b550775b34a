"""Loading pretrained folders: offline only, safetensors only, sized before allocating, and every bad
input a clear error naming the file, raised before anything heavy runs."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodegraph import Session, Workflow
from nodegraph.fingerprint import fingerprint
from nodes.families.family import BUILTIN_FAMILIES, load_pipeline
from nodes.families.loading import CheckpointError, ModelFolderError, safetensors_elements

FAMILIES = {f.name: f for f in BUILTIN_FAMILIES}
WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def load(folder: Path | str):
    return load_pipeline(str(folder), FAMILIES, torch.float32, "cpu")


@pytest.fixture()
def sd15_copy(sd15_folder, tmp_path) -> Path:
    return Path(shutil.copytree(sd15_folder, tmp_path / "sd15"))


def test_a_missing_folder_names_it(tmp_path):
    with pytest.raises(ModelFolderError, match="no folder .*nowhere"):
        load(tmp_path / "nowhere")


def test_a_hub_id_is_not_looked_up_but_explained():
    with pytest.raises(ModelFolderError, match="hub id.*never downloads.*huggingface-cli download"):
        load("stabilityai/stable-diffusion-3-medium-diffusers")


def test_a_folder_missing_a_component_names_the_component(sd15_copy):
    shutil.rmtree(sd15_copy / "vae")
    with pytest.raises(ModelFolderError, match="'vae' folder is missing"):
        load(sd15_copy)


def test_a_folder_without_model_index_says_so(sd15_copy):
    (sd15_copy / "model_index.json").unlink()
    with pytest.raises(ModelFolderError, match="model_index.json.*missing"):
        load(sd15_copy)


def test_an_unknown_pipeline_lists_the_known_families(sd15_copy):
    index = json.loads((sd15_copy / "model_index.json").read_text())
    (sd15_copy / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(CheckpointError, match="KandinskyPipeline.*known: .*FluxPipeline.*StableDiffusionPipeline"):
        load(sd15_copy)


def test_a_corrupt_header_is_refused_naming_the_file(sd15_copy):
    weights = next((sd15_copy / "unet").glob("*.safetensors"))
    weights.write_bytes(struct.pack("<Q", 40) + b"{not json at all, truncated")
    with pytest.raises(CheckpointError, match=f"{weights.name}.*corrupt safetensors header"):
        load(sd15_copy)


def test_pickled_weights_are_refused_never_unpickled(sd15_copy):
    unet = sd15_copy / "unet"
    for file in unet.glob("*.safetensors"):
        file.unlink()
    # a pickle that would run code if loaded: it must never be opened
    (unet / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04cposix\nsystem\n(S'touch /tmp/pwned'\ntR.")
    with pytest.raises(CheckpointError, match="only pickled weights.*diffusion_pytorch_model.bin.*safetensors only"):
        load(sd15_copy)
    assert not Path("/tmp/pwned").exists()


def test_a_config_far_larger_than_its_weights_is_refused_before_allocating(sd15_copy):
    config_file = sd15_copy / "unet" / "config.json"
    config = json.loads(config_file.read_text())
    config["block_out_channels"] = [32768, 65536]  # billions of parameters claimed by a tiny file
    config_file.write_text(json.dumps(config))
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="refused before allocating anything"):
        load(sd15_copy)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200


def test_header_elements_count_every_tensor(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, tmp_path / "w.safetensors")
    assert safetensors_elements(tmp_path / "w.safetensors") == 17


def test_loading_never_reaches_the_network(sd15_folder, tmp_path):
    """Run the loader in a process where any socket connection raises: it must still load."""
    script = f"""
import socket, torch
def refuse(*a, **k):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from nodes.families.family import BUILTIN_FAMILIES, load_pipeline
parts = load_pipeline({str(sd15_folder)!r}, {{f.name: f for f in BUILTIN_FAMILIES}}, torch.float32, "cpu")
print(type(parts.backbone).__name__, parts.family.name)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["UNetBackbone", "sd"]


def test_the_workflow_without_a_model_tells_the_user_to_set_model_path():
    done = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", str(WORKFLOWS / "sd3_text_to_image.json")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 2
    assert "node 'model', input 'path'" in done.stderr and "--set model.path=" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("name", ["sd15", "sdxl", "sd3", "flux"])
def test_every_family_workflow_names_its_model_node_path(builtin_registry, name):
    from nodegraph.validate import validate

    workflow = Workflow.load(WORKFLOWS / f"{name}_text_to_image.json")
    assert workflow.nodes["model"].type == "core/load_pipeline"
    problems = validate(workflow, builtin_registry)
    assert [(p.node, p.input, p.kind) for p in problems] == [("model", "path", "missing_input")]


def test_model_fingerprints_read_headers_not_gigabytes(tmp_path, monkeypatch):
    """A weights input is identified by names, sizes, times and safetensors headers: a big file's data
    is not hashed (so validating a 20 GB model is instant), yet a changed header changes the key."""
    import nodegraph.fingerprint as fp

    monkeypatch.setattr(fp, "SMALL_FILE", 1024)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64, 64)}, tmp_path / "model.safetensors")
    reads = []
    original = fp._file_digest
    monkeypatch.setattr(fp, "_file_digest", lambda p, s: reads.append(p) or original(p, s))
    first = fingerprint(tmp_path, weights=True)
    assert reads == []  # nothing above SMALL_FILE was hashed whole
    save_file({"w": torch.zeros(64, 65)}, tmp_path / "model.safetensors")
    assert fingerprint(tmp_path, weights=True) != first
    (tmp_path / "config.json").write_text("{}")
    assert fingerprint(tmp_path, weights=True) != first
    assert reads == [tmp_path / "config.json"]  # small files are hashed whole


def test_a_long_prompt_warns_with_the_dropped_words(builtin_registry, sd15_folder, tmp_path):
    workflow = Workflow.load(WORKFLOWS / "sd15_text_to_image.json").set("model.path", str(sd15_folder))
    long_prompt = " ".join(["a photo of the red cat"] * 14) + " with the blue dog"
    workflow = workflow.set("prompt.text", long_prompt)
    events = []
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path, read_roots=[sd15_folder.parent])
    session.run(workflow, outputs=["prompt", "null"], on_event=events.append)
    warnings = [e for e in events if e.kind == "warning"]
    assert [w.node for w in warnings] == ["prompt"]
    assert "blue dog" in warnings[0].message and "dropped" in warnings[0].message
