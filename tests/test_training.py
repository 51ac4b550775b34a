"""Trainers: overfit one batch, label dropout, determinism, a tiny workflow end to end through Session."""

import pytest
import torch

from nodegraph import Session
from nodes.models.classifier import NoisyClassifier
from nodes.models.mlp import MLPBackbone
from nodes.models.training_info import training_info
from nodes.models.unet import UNet
from nodes.paths import CondOTPath
from nodes.training.classifier_training import classifier_loss_fn
from nodes.training.common import Optimisation, fit
from nodes.training.flow_matching import flow_matching_loss_fn, label_condition

from .helpers import EventLog, link, wf


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on a contended pool."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def same_batch_every_step(make_loss):
    """A loss whose batch (indices, noise, t) is drawn from a freshly seeded generator at every step."""
    def loss(model, step):
        return make_loss(torch.Generator().manual_seed(0))(model, step)
    return loss


def test_flow_matching_overfits_one_batch():
    torch.manual_seed(0)
    points = torch.randn(8, 2)
    labels = torch.arange(8) % 3
    model = MLPBackbone(dim=2, hidden=64, depth=2, num_classes=3)
    loss = same_batch_every_step(lambda gen: flow_matching_loss_fn(
        CondOTPath(), points, label_condition(labels, 3), 8, 0.0, gen))
    _, losses = fit(model, loss, Optimisation(steps=250, lr=1e-2, warmup=10, grad_clip=0))
    assert losses[-1] < losses[0] / 10


def test_noisy_classifier_overfits_one_batch():
    torch.manual_seed(0)
    images = torch.randn(4, 1, 4, 4)
    labels = torch.arange(4)
    model = NoisyClassifier(image_size=4, channels=8, channel_mults=(1,), num_classes=4)
    loss = same_batch_every_step(lambda gen: classifier_loss_fn(CondOTPath(), images, labels, 4, 0.0, False, gen))
    _, losses = fit(model, loss, Optimisation(steps=200, lr=1e-2, warmup=5))
    assert losses[-1] < losses[0] / 10


def test_label_dropout_uses_the_null_id():
    make = label_condition(torch.tensor([4, 5, 6]), null_id=10)
    cond = make(torch.tensor([0, 1, 2]), torch.tensor([False, True, False]))
    assert cond.labels.tolist() == [4, 10, 6]
    assert label_condition(None, 10)(torch.tensor([0]), torch.tensor([False])) is None


def test_training_is_deterministic_and_leaves_input_untouched():
    model = MLPBackbone(dim=2, hidden=16, depth=1, num_classes=2)
    before = [p.clone() for p in model.parameters()]
    data, labels = torch.randn(32, 2), torch.arange(32) % 2

    def run():
        loss = flow_matching_loss_fn(CondOTPath(), data, label_condition(labels, 2), 8, 0.2,
                                     torch.Generator().manual_seed(5))
        return fit(model, loss, Optimisation(steps=20, warmup=2))

    (ema_a, losses_a), (ema_b, losses_b) = run(), run()
    assert losses_a == losses_b
    assert all(torch.equal(a, b) for a, b in zip(ema_a.parameters(), ema_b.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert not ema_a.training and not any(p.requires_grad for p in ema_a.parameters())


def test_tiny_digits_training_workflow_saves_and_reloads(tmp_path):
    train = wf({
        "data": {"type": "core/digits_dataset", "inputs": {"size": 8}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "net": {"type": "core/unet", "inputs": {"image_size": 8, "channels": 8, "channel_mults": [1, 2],
                                                "attention_resolutions": [], "heads": 2, "num_classes": 10}},
        "train": {"type": "core/train_flow_matching", "inputs": {
            "backbone": link("net", "unet"), "dataset": link("data", "dataset"), "path": link("path", "path"),
            "steps": 6, "batch_size": 8, "label_dropout": 0.5}},
        "save": {"type": "core/save_backbone", "inputs": {"backbone": link("train", "backbone"),
                                                          "filename": "tiny.safetensors"}},
    })
    events = EventLog()
    session = Session(device="cpu", output_dir=tmp_path)
    result = session.run(train, outputs=["save", "train"], on_event=events)
    steps = [e for e in events if e.kind == "progress" and e.node == "train"]
    assert len(steps) == 6
    saved = result.value("save.path")
    trained = result.value("train.backbone")
    assert training_info(trained).steps == 6 and training_info(trained).path == {"kind": "cond_ot"}
    load = wf({"load": {"type": "core/load_backbone", "inputs": {"file": saved}}})
    loaded = Session(device="cpu", output_dir=tmp_path).run(load, outputs=["load"]).value("load.backbone")
    assert isinstance(loaded, UNet) and training_info(loaded) == training_info(trained)
    assert training_info(loaded).dataset["name"] == "sklearn_digits_8"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values(),
                                                 strict=True))


class CondOTOracle(torch.nn.Module):
    """Knows the one data point z, so from x_t = t z + (1 - t) eps it recovers eps and outputs the
    closed-form CondOT target alpha'_t z + beta'_t eps = z - eps (times `sign`)."""

    prediction = "velocity"

    def __init__(self, z: torch.Tensor, sign: float) -> None:
        super().__init__()
        self.z, self.sign = z, sign

    def forward(self, x_t, t, cond):
        t = t[:, None]
        eps = (x_t - t * self.z) / (1 - t)
        return self.sign * (self.z - eps)


def test_flow_matching_loss_regresses_onto_the_closed_form_target():
    """Loss ~ 0 for a model that outputs z - eps, and 4 E|z - eps|^2 for one that outputs eps - z:
    a negated (or otherwise wrong) training target fails here, not only in sample quality."""
    z = torch.tensor([[1.5, -2.0]], dtype=torch.float64)

    def loss_of(sign: float) -> float:
        loss = flow_matching_loss_fn(CondOTPath(), z, label_condition(None, None), 64, 0.0,
                                     torch.Generator().manual_seed(0))
        return float(loss(CondOTOracle(z, sign), 0))

    assert loss_of(1.0) < 1e-10
    assert loss_of(-1.0) > 4.0
