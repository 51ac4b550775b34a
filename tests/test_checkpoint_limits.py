"""Checkpoints are untrusted input: a few bytes of metadata must not make us allocate gigabytes, a
malformed config is refused with its key named, and tensors of unexpected dtypes are not cast silently.

The malicious files are crafted here: one tiny tensor and metadata asking for a huge model.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nodes.models.architectures import Architecture
from nodes.models.checkpoint import (
    MAX_PARAMETERS_ENV,
    CheckpointError,
    load_model,
    max_parameters,
    read_metadata,
    save_model,
)
from nodes.models.mlp import MLPBackbone

from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "nodes" / "weights"


def crafted(path: Path, arch: str, config: dict, kind: str = "backbone") -> Path:
    """A valid safetensors file with one 1-element tensor whose metadata asks for `arch(**config)`."""
    meta = {"format": "nodegraph/model", "version": 1, "kind": kind, "arch": arch, "config": config}
    save_file({"w": torch.zeros(1)}, str(path), metadata={"nodegraph": json.dumps(meta)})
    return path


ATTACKS = {
    # 17 G parameters (64 GiB of float32) from a few hundred bytes
    "unet": ("unet", {"channels": 65536, "channel_mults": [1, 2, 4, 8]}, "backbone"),
    # the VAE one: 2.4 G parameters at least
    "vae": ("autoencoder_kl", {"channels": [16384, 16384]}, "vae"),
    # under the parameter limit (1.2 G, 4.8 GB) but not what the file holds: refused on the header alone
    "mlp_under_limit": ("mlp", {"hidden": 20000, "depth": 2}, "backbone"),
}


def huge_encoder_folder(folder: Path) -> Path:
    """The bundled text encoder's files (linked) with a config.json asking for a 2 G parameter BERT."""
    from nodes.text.encoder import bundled_model_dir

    source = bundled_model_dir("all-MiniLM-L6-v2")
    folder.mkdir()
    for entry in source.iterdir():
        if entry.name != "config.json":
            (folder / entry.name).symlink_to(entry)
    config = json.loads((source / "config.json").read_text())
    config.update(hidden_size=65536, intermediate_size=262144, num_attention_heads=16)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_tiny_files_asking_for_huge_models_are_refused_before_any_allocation(tmp_path):
    """Run the loads in a process whose address space is capped at 3 GiB: refusing from the header
    keeps it far below; any attempt to build the real module dies with an allocation error instead
    of the CheckpointError (and without the cap, would take the machine down)."""
    files = {name: crafted(tmp_path / f"{name}.safetensors", arch, config, kind)
             for name, (arch, config, kind) in ATTACKS.items()}
    for path in files.values():
        assert path.stat().st_size < 400
    encoder = huge_encoder_folder(tmp_path / "encoder")
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from nodes.models.checkpoint import CheckpointError, load_model
        out = {{}}
        for name, path in {json.dumps({n: str(p) for n, p in files.items()})}.items():
            try:
                load_model(path)
                out[name] = "loaded"
            except CheckpointError as error:
                out[name] = str(error)
        from nodes.text.encoder import load_text_encoder
        try:
            load_text_encoder({str(encoder)!r})
            out["encoder"] = "loaded"
        except CheckpointError as error:
            out["encoder"] = str(error)
        out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(json.dumps(out))
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for name in ("unet", "vae"):
        message = out[name]
        assert str(files[name]) in message and ATTACKS[name][0] in message, message
        assert "more than the limit of 2,000,000,000" in message and "before allocating" in message, message
        assert MAX_PARAMETERS_ENV in message
    assert "17,179,869,184 parameters" in out["unet"]  # the count is the one the config asks for
    assert "weights do not match the metadata's mlp config" in out["mlp_under_limit"]
    assert out["encoder"].startswith(f"{str(encoder)!r}: the bert text encoder config asks for at least")
    assert "more than the limit of 2,000,000,000" in out["encoder"]
    assert out["maxrss_mb"] < 1500  # flat: torch and the library, no model


def test_the_limit_is_read_at_call_time_and_names_the_count(tmp_path, monkeypatch):
    model = MLPBackbone(dim=2, hidden=32, depth=2)
    count = sum(p.numel() for p in model.parameters())
    file = save_model(model, tmp_path / "mlp.safetensors")
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "1e3")
    assert max_parameters() == 1000
    with pytest.raises(CheckpointError, match=r"mlp config asks for at least [\d,]+ parameters, more than the "
                                              r"limit of 1,000") as refused:
        load_model(file)
    assert str(file) in str(refused.value)
    assert load_model(file, parameter_limit=count) is not None  # exactly at the limit is fine
    with pytest.raises(CheckpointError, match=f"more than the limit of {count - 1:,}"):
        load_model(file, parameter_limit=count - 1)
    monkeypatch.setenv(MAX_PARAMETERS_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MAX_PARAMETERS_ENV} must be a positive number"):
        load_model(file)
    monkeypatch.delenv(MAX_PARAMETERS_ENV)
    torch.testing.assert_close(load_model(file).state_dict(), model.state_dict())


def test_a_config_asking_for_a_million_layers_stops_after_a_few(tmp_path):
    """Counting weight tensors as they are registered stops a build of a million tiny layers (minutes
    of Python even on the meta device) a few registrations past what the file could hold."""
    file = crafted(tmp_path / "deep.safetensors", "mlp", {"hidden": 1, "depth": 1_000_000})
    with pytest.raises(CheckpointError, match="more than 66 weight tensors, far more than the file holds"):
        load_model(file)


@pytest.mark.parametrize(("config", "message"), [
    ({"hidden": -4}, "hidden = -4 is out of range"),
    ({"hidden": True}, "config does not build a mlp: hidden: Input should be a valid integer"),
    ({"hidden": "32"}, "hidden: Input should be a valid integer"),
    ({"hidden": 32.5}, "hidden: Input should be a valid integer"),
    ({"hidden": 10**40}, "is out of range"),
    ({"depth": [1, 2]}, "depth: Input should be a valid integer"),
    ({"prediction": 3}, "prediction: Input should be a valid string"),
    ({"wings": 2}, "wings: Extra inputs are not permitted"),
    ({"channels": [[[[[[1]]]]]]}, r"channels\[0\]\S* is nested too deeply"),
])
def test_absurd_config_values_are_refused_with_the_key(tmp_path, config, message):
    file = crafted(tmp_path / "bad.safetensors", "mlp", config)
    with pytest.raises(CheckpointError, match=message) as refused:
        load_model(file)
    assert str(file) in str(refused.value)


def test_nan_in_a_config_is_refused(tmp_path):
    file = crafted(tmp_path / "nan.safetensors", "autoencoder_kl", {"scaling_factor": float("nan")}, kind="vae")
    with pytest.raises(CheckpointError, match="scaling_factor = nan is not a finite number"):
        load_model(file)


def _recast(source: Path, target: Path, name: str, dtype: torch.dtype) -> None:
    """Copy a checkpoint with one tensor stored in another dtype (metadata unchanged)."""
    tensors = load_file(str(source))
    tensors[name] = tensors[name].to(dtype)
    save_file(tensors, str(target), metadata={"nodegraph": json.dumps(read_metadata(source))})


@pytest.mark.parametrize("dtype", [torch.int8, torch.float64])
def test_odd_dtypes_are_refused_unless_a_cast_is_asked_for(tmp_path, dtype):
    model = MLPBackbone(dim=2, hidden=8, depth=1)
    good = save_model(model, tmp_path / "good.safetensors")
    odd = tmp_path / "odd.safetensors"
    _recast(good, odd, "inp.weight", dtype)
    short = {torch.int8: "I8", torch.float64: "F64"}[dtype]
    with pytest.raises(CheckpointError, match=rf"inp\.weight \({short}\).*allow_cast=True"):
        load_model(odd)
    cast = load_model(odd, allow_cast=True)
    assert cast.inp.weight.dtype == torch.float32
    torch.testing.assert_close(cast.inp.weight, model.inp.weight.to(dtype).float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_weights_load_without_asking(tmp_path, dtype):
    model = MLPBackbone(dim=2, hidden=8, depth=1)
    good = save_model(model, tmp_path / "good.safetensors")
    half = tmp_path / "half.safetensors"
    _recast(good, half, "inp.weight", dtype)
    torch.testing.assert_close(load_model(half).inp.weight, model.inp.weight.to(dtype).float())


class Counter(nn.Module):
    """A plugin-style architecture with an integer buffer: its own int64 tensor is not an 'odd' dtype."""

    arch = "counter"

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.config = {"width": width}
        self.weight = nn.Parameter(torch.randn(width))
        self.register_buffer("seen", torch.arange(width))


def test_a_models_own_integer_buffers_are_not_odd_dtypes(tmp_path):
    archs = {"counter": Architecture(Counter, "classifier")}
    model = Counter()
    file = save_model(model, tmp_path / "counter.safetensors", architectures=archs)
    loaded = load_model(file, architectures=archs)
    assert loaded.seen.dtype == torch.int64 and torch.equal(loaded.seen, model.seen)


@pytest.mark.parametrize("name", sorted(p.stem for p in WEIGHTS.glob("*.safetensors")))
def test_every_shipped_checkpoint_passes_the_checks(name):
    model = load_model(WEIGHTS / f"{name}.safetensors")
    assert sum(p.numel() for p in model.parameters()) < max_parameters()


def test_deeply_nested_metadata_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"nodegraph": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(CheckpointError, match="metadata is not valid JSON"):
        load_model(path)


def test_the_loader_node_casts_only_when_its_allow_cast_input_asks(builtin_registry, tmp_path):
    from nodegraph import NodeFailed, Session, Workflow

    good = save_model(MLPBackbone(dim=2, hidden=8, depth=1), tmp_path / "good.safetensors")
    odd = tmp_path / "odd.safetensors"
    _recast(good, odd, "inp.weight", torch.float64)
    workflow = Workflow.model_validate({"format": "nodegraph/workflow", "nodes": {
        "load": {"type": "core/load_backbone", "inputs": {"file": str(odd)}}}})
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out", read_roots=[tmp_path])
    with pytest.raises(NodeFailed, match="allow_cast"):
        session.run(workflow, outputs=["load"])
    cast = session.run(workflow.set("load.allow_cast", True), outputs=["load"]).value("load")
    assert cast.inp.weight.dtype == torch.float32
