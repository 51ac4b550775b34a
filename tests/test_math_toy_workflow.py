"""The toy CFG workflow end to end: Session and the `nodegraph run` CLI, progress, cancel, caching."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from nodegraph import RunCancelled, Session, Workflow
from nodes.paths import CondOTPath
from nodes.plots import plot_2d
from nodes.toy import GMMClassifier, preset_mixture

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "toy_mixture_cfg.json"


def _small() -> Workflow:
    workflow = Workflow.load(WORKFLOW)
    workflow.nodes["noise"].inputs["shape"] = [400, 2]
    workflow.nodes["grid"].inputs["steps"] = 20
    return workflow


def test_workflow_runs_and_samples_the_requested_class(tmp_path):
    events = []
    session = Session(output_dir=tmp_path)
    result = session.run(_small(), outputs=["save", "solve"], on_event=events.append)
    (png,) = result["save"]["paths"]
    image = Image.open(png)
    assert image.size == (512, 512)
    rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8).reshape(-1, 3).int()
    red = int(((rgb[:, 0] > 200) & (rgb[:, 1] < 100) & (rgb[:, 2] < 100)).sum())
    assert red > 100  # the final samples are drawn
    samples = result["solve"]["latent"]
    assert samples.shape == (400, 2) and result["solve"]["trajectory"].shape == (21, 400, 2)
    assert result["solve"]["nfe"] == 20
    probs = torch.softmax(GMMClassifier(preset_mixture("ring", 8, 4.0, 0.4, 1.0, 4), CondOTPath())(
        samples.double(), torch.ones(400)), dim=-1)
    assert float(probs[:, 0].mean()) > 0.95  # label 0 with w = 3
    steps = [e.step for e in events if e.kind == "progress" and e.node == "solve"]
    assert steps == list(range(1, 21))

    # changing the guidance scale re-runs cfg and what follows, never the mixture or the noise
    workflow = _small()
    workflow.nodes["cfg"].inputs["scale"] = 1.0
    again = session.run(workflow, outputs=["solve"])
    assert "noise" in again.cached and "field" in again.cached and "mixture" not in again.ran
    assert set(again.ran) == {"cfg", "solve"}


def test_cancel_inside_the_solver(tmp_path):
    session = Session(output_dir=tmp_path)

    def cancel_on_fifth_step(event):
        if event.kind == "progress" and event.step == 5:
            session.cancel()

    with pytest.raises(RunCancelled):
        session.run(_small(), outputs=["solve"], on_event=cancel_on_fifth_step)


def test_cli_runs_the_workflow(tmp_path):
    cli = Path(sys.executable).with_name("nodegraph")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "nodegraph.cli"]
    done = subprocess.run([*command, "run", str(WORKFLOW), "--out", str(tmp_path), "--events", "none",
                           "--set", "noise.shape=[200,2]", "--set", "grid.steps=10", "--device", "cpu"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.glob("toy_mixture_cfg_*.png"))


def test_plot_modes():
    trajectory = torch.randn(5, 50, 2)
    for mode in ("scatter", "trajectories", "density"):
        image = plot_2d(trajectory, trajectory[-1], mode=mode, size=128)
        assert image.shape == (1, 3, 128, 128) and 0 <= float(image.min()) and float(image.max()) <= 1
        assert float(image.std()) > 0.01  # something was drawn
    with pytest.raises(ValueError):
        plot_2d(torch.randn(10, 3))


def test_classifier_guidance_workflow_samples_the_label(tmp_path):
    workflow = Workflow.load(ROOT / "workflows" / "toy_classifier_guidance.json")
    workflow.nodes["noise"].inputs["shape"] = [300, 2]
    result = Session(output_dir=tmp_path).run(workflow, outputs=["save", "solve", "classifier"])
    assert Path(result["save"]["paths"][0]).exists()
    samples = result["solve"]["latent"]
    probs = torch.softmax(result["classifier"]["classifier"](samples, torch.ones(300)), dim=-1)
    assert float(probs[:, 2].mean()) > 0.95


def test_sde_workflow_samples_the_ring(tmp_path):
    workflow = Workflow.load(ROOT / "workflows" / "toy_sde.json")
    workflow.nodes["noise"].inputs["shape"] = [2000, 2]
    workflow.nodes["grid"].inputs["steps"] = 50
    result = Session(output_dir=tmp_path).run(workflow, outputs=["save", "solve"])
    assert Path(result["save"]["paths"][0]).exists()
    radius = result["solve"]["latent"].norm(dim=1)
    assert abs(float(radius.mean()) - 3.0) < 0.15 and result["solve"]["nfe"] == 50
