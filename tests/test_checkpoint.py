"""Checkpoints: safetensors + JSON metadata round trip; clear errors for pickles, bad files, mismatches."""

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from nodes.conditioning import Condition
from nodes.models.checkpoint import CheckpointError, load_model, read_metadata, save_model
from nodes.models.classifier import NoisyClassifier
from nodes.models.dit import DiT
from nodes.models.mlp import MLPBackbone
from nodes.models.training_info import TrainingInfo, training_info, with_training_info
from nodes.models.unet import UNet

from .test_backbones import randomised
from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("model, x", [
    (UNet(image_size=8, channels=8, channel_mults=(1, 2), context_dim=8, prediction="epsilon"),
     torch.randn(2, 1, 8, 8)),
    (DiT(image_size=8, dim=16, depth=1, heads=2, num_classes=3), torch.randn(2, 1, 8, 8)),
    (MLPBackbone(dim=2, hidden=8, depth=1, num_classes=2, prediction="x0"), torch.randn(2, 2)),
])
def test_backbone_round_trip_is_exact(tmp_path, model, x):
    model = randomised(model)
    info = TrainingInfo("flow_matching", steps=7, path={"kind": "cond_ot"}, settings={"label_dropout": 0.1})
    file = save_model(with_training_info(model, info), tmp_path / "m.safetensors")
    assert file.stat().st_mode & 0o777 == 0o644 & ~current_umask()  # an ordinary file, not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
    loaded = load_model(file)
    t = torch.rand(2)
    cond = Condition(labels=torch.tensor([0, 1]), tokens=torch.randn(2, 3, 8))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                   strict=True))
    with torch.no_grad():  # same weights; kernels may differ in the last bit with memory layout
        torch.testing.assert_close(loaded(x, t, cond), model(x, t, cond), atol=1e-6, rtol=1e-6)
    assert loaded.config == model.config and loaded.prediction == model.prediction
    assert training_info(loaded) == info
    assert not any(p.requires_grad for p in loaded.parameters())
    meta = read_metadata(file)
    assert meta["arch"] == model.arch and meta["kind"] == "backbone"


def test_classifier_round_trip_and_kind_check(tmp_path):
    clf = randomised(NoisyClassifier(image_size=8, channels=8, channel_mults=(1, 2), num_classes=4))
    file = save_model(clf, tmp_path / "c.safetensors")
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    with torch.no_grad():
        assert torch.equal(load_model(file, kind="classifier")(x, t), clf(x, t))
    assert read_metadata(file)["conditioning"] == "none"
    with pytest.raises(CheckpointError, match="holds a classifier"):
        load_model(file, kind="backbone")


def test_pickle_formats_are_refused(tmp_path):
    for suffix in (".pt", ".ckpt"):
        path = tmp_path / f"m{suffix}"
        path.write_bytes(b"\x80\x04")
        with pytest.raises(CheckpointError, match="pickles, which are never loaded"):
            load_model(path)
        with pytest.raises(CheckpointError):
            save_model(MLPBackbone(hidden=8, depth=1), path)


def test_bad_file_and_missing_metadata(tmp_path):
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"definitely not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_model(garbage)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": torch.zeros(2)}, bare)
    with pytest.raises(CheckpointError, match="no nodegraph metadata"):
        load_model(bare)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def _with_metadata(source, target, meta: dict) -> None:
    from safetensors.torch import load_file
    save_file(load_file(str(source)), str(target), metadata={"nodegraph": json.dumps(meta)})


def test_mismatched_metadata_is_a_clear_error(tmp_path):
    model = MLPBackbone(dim=2, hidden=8, depth=1)
    good = save_model(model, tmp_path / "good.safetensors")
    meta = read_metadata(good)
    wider = {**meta, "config": {**meta["config"], "hidden": 16}}
    _with_metadata(good, tmp_path / "wide.safetensors", wider)
    with pytest.raises(CheckpointError, match="weights do not match.*wrong shape"):
        load_model(tmp_path / "wide.safetensors")
    deeper = {**meta, "config": {**meta["config"], "depth": 2}}
    _with_metadata(good, tmp_path / "deep.safetensors", deeper)
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "deep.safetensors")
    _with_metadata(good, tmp_path / "arch.safetensors", {**meta, "arch": "transformer9000"})
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_model(tmp_path / "arch.safetensors")
    _with_metadata(good, tmp_path / "cfg.safetensors", {**meta, "config": {"nonsense": 1}})
    with pytest.raises(CheckpointError, match="config does not build"):
        load_model(tmp_path / "cfg.safetensors")


BUNDLED = Path(__file__).resolve().parent.parent / "nodes" / "weights"
needs_bundled = pytest.mark.skipif(not (BUNDLED / "digits_cfg_unet.safetensors").is_file(),
                                   reason="bundled digits models not trained yet")


@needs_bundled
def test_bundled_digits_models_load_with_metadata_and_sample_the_asked_digit():
    from nodes.data.digits import load_digits_tensors
    from nodes.fields import ModelField
    from nodes.guidance import CFGField
    from nodes.paths import CondOTPath
    from nodes.solvers import euler
    from nodes.time_grids import uniform_grid

    unet = load_model(BUNDLED / "digits_cfg_unet.safetensors", kind="backbone")
    clean = load_model(BUNDLED / "digits_clean_classifier.safetensors", kind="classifier")
    assert training_info(unet).path == {"kind": "cond_ot"} and unet.null_label == 10
    images, labels = load_digits_tensors(16)
    with torch.no_grad():
        assert (clean(images[:300], torch.ones(300)).argmax(-1) == labels[:300]).float().mean() > 0.95
    wanted = torch.arange(10).repeat(2)
    null = Condition(labels=torch.tensor([10]))
    field = CFGField(ModelField(unet, CondOTPath()), Condition(labels=wanted), null, 4.0)
    noise = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        samples = euler(field, noise, uniform_grid(8, 0.0, 1.0))
        hits = (clean(samples.clamp(-1, 1), torch.ones(20)).argmax(-1) == wanted).float().mean()
    assert hits >= 0.8  # guided samples are recognisably the requested digits


@needs_bundled
@pytest.mark.parametrize("name", ["digits_cfg_sweep", "digits_classifier_guidance"])
def test_digits_sampling_workflows_run(tmp_path, name):
    from nodegraph import Session, Workflow

    data = Workflow.load(Path(__file__).resolve().parent.parent / "workflows" / f"{name}.json").to_dict()
    data["nodes"]["grid"]["inputs"]["steps"] = 2
    result = Session(device="cpu", output_dir=tmp_path).run(Workflow.from_dict(data))
    (png,) = result.value("save.paths")
    rows = 3 if name == "digits_cfg_sweep" else 2
    with Image.open(png) as image:
        assert image.size == (10 * 17 + 1, rows * 17 + 1)
