"""Every shipped training workflow (workflows/train_*.json) runs end to end through the engine,
shortened to a few steps on tiny data, and writes checkpoints that load back with their training facts."""

from pathlib import Path

import pytest

from nodegraph import Session, Workflow
from nodes.models.checkpoint import load_model, read_metadata
from nodes.models.training_info import training_info

from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
STEPS = 4

SHORTEN = {
    "train_digits_cfg": {"data.size": 8, "unet.image_size": 8, "unet.channels": 8, "train.steps": STEPS,
                         "train.batch_size": 4},
    "train_digits_classifier": {"data.size": 8, "noisy_net.image_size": 8, "noisy_net.channels": 8,
                                "clean_net.image_size": 8, "clean_net.channels": 8, "train_noisy.steps": STEPS,
                                "train_noisy.batch_size": 4, "train_clean.steps": STEPS, "train_clean.batch_size": 4},
    "train_shapes_t2i": {"data.count": 8, "unet.channels": 8, "unet.attention_resolutions": [], "unet.heads": 2,
                         "train.steps": STEPS, "train.batch_size": 4, "train.checkpoint_every": 2},
    "train_shapes_vae": {"data.count": 8, "train.steps": STEPS, "train.batch_size": 4, "train.channels": [8, 16]},
}
"""Overrides per workflow: a few steps, tiny data and networks; the graph itself is the shipped one."""
SAVES = {"train_digits_cfg": {"save": ("train", "backbone", "flow_matching")},
         "train_digits_classifier": {"save_noisy": ("train_noisy", "classifier", "noisy_classifier"),
                                     "save_clean": ("train_clean", "classifier", "clean_classifier")},
         "train_shapes_t2i": {"save": ("train", "backbone", "flow_matching")},
         "train_shapes_vae": {"save": ("train", "vae", "vae")}}
"""Save node -> (training node, its kind of model, the objective recorded in the metadata)."""


def test_every_training_workflow_is_covered():
    assert sorted(p.stem for p in WORKFLOWS.glob("train_*.json")) == sorted(SHORTEN)


@pytest.mark.parametrize("name", sorted(SHORTEN))
def test_training_workflow_writes_checkpoints_that_load_with_their_metadata(tmp_path, name):
    workflow = Workflow.load(WORKFLOWS / f"{name}.json")
    for address, value in SHORTEN[name].items():
        workflow.set(address, value)
    saves = SAVES[name]
    result = Session(device="cpu", output_dir=tmp_path).run(
        workflow, outputs=[*saves, *(train for train, _, _ in saves.values())])
    for save, (train, kind, objective) in saves.items():
        file = Path(result.value(f"{save}.path"))
        assert file.parent == tmp_path and file.is_file()
        loaded = load_model(file, kind=kind)
        info = training_info(loaded)
        assert info == training_info(result.value(f"{train}.{kind}"))
        assert info.objective == objective and info.steps == STEPS and info.final_loss > 0
        assert info.seed == workflow.nodes[train].inputs["seed"]
        assert read_metadata(file)["training"]["dataset"]["size"] == (1797 if "digits" in name else 8)
        if kind != "vae":
            assert info.path == {"kind": "cond_ot"}
    if name == "train_shapes_t2i":  # checkpoint_every = 2: EMA weights at steps 2 and 4 with their step count
        for step in (2, STEPS):
            assert training_info(load_model(tmp_path / f"shapes_t2i_step{step}.safetensors")).steps == step
