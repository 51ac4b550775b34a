"""The four prompt-to-prompt workflows run end to end (shortened to 3 solver steps), not only validate."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from nodegraph import Session, Workflow

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["p2p_word_swap", "p2p_refine", "p2p_reweight", "p2p_local_blend"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One session for all four: the model, VAE and text encoder load once and stay cached."""
    return Session(device="cpu", output_dir=tmp_path_factory.mktemp("p2p_out"))


@pytest.mark.parametrize("name", NAMES)
def test_p2p_workflow_runs_and_edits(session, name):
    workflow = Workflow.load(ROOT / "workflows" / f"{name}.json")
    workflow.set("grid.steps", 3)
    targets = [*session.compile(workflow).output_nodes(), "decode", "side_by_side"]
    result = session.run(workflow, outputs=targets)
    images = result.value("decode")
    assert images.shape == (2, 3, 32, 32)  # source and edit, decoded
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    source, edit = images
    assert (source - edit).abs().mean() > 1e-3, "the edit left the source image unchanged"
    assert result.value("side_by_side").shape == (1, 3, 36, 70)
    saved = [Path(p) for p in result["save"]["paths"]]
    assert len(saved) == 1 and saved[0].parent == session.output_dir.resolve() and saved[0].name.startswith(name)
    with Image.open(saved[0]) as png:
        assert png.size == (70, 36)
