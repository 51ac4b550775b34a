"""Model nodes through the engine: VAE encode/decode with the shipped VAE, the DiT builder training
with class and with text conditioning."""

import torch

from nodegraph import Session
from nodes.conditioning import Condition
from nodes.models.dit import DiT
from nodes.paths import CondOTPath
from nodes.training.common import Optimisation, fit
from nodes.training.flow_matching import flow_matching_loss_fn

from .helpers import link, wf
from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)


def run(nodes: dict, outputs: list[str], tmp_path):
    return Session(device="cpu", output_dir=tmp_path).run(wf(nodes), outputs=outputs)


def test_vae_encode_then_decode_of_shapes_is_close_to_the_input(tmp_path):
    result = run({
        "data": {"type": "core/shapes_dataset", "inputs": {"count": 6, "seed": 777}},
        "images": {"type": "core/dataset_images", "inputs": {"dataset": link("data", "dataset"), "count": 6}},
        "vae": {"type": "core/vae_loader", "inputs": {"weights": "shapes"}},
        "encode": {"type": "core/vae_encode", "inputs": {"vae": link("vae", "vae"), "images": link("images", "image")}},
        "decode": {"type": "core/vae_decode", "inputs": {"vae": link("vae", "vae"),
                                                         "latents": link("encode", "latent")}},
    }, ["images", "encode", "decode"], tmp_path)
    images, latents, decoded = (result.value(k) for k in ("images.image", "encode.latent", "decode.image"))
    assert images.shape == (6, 3, 32, 32) and latents.shape == (6, 4, 8, 8)
    assert float((decoded - images).pow(2).mean()) < 1e-3  # the shipped VAE's bound (tests/test_vae.py)
    assert float((decoded - images.flip(0)).pow(2).mean()) > 1e-2  # it reconstructs *these* images


def dit_node(tmp_path, **inputs) -> DiT:
    inputs = {"image_size": 8, "patch_size": 2, "dim": 16, "depth": 1, "heads": 2, **inputs}
    return run({"net": {"type": "core/dit", "inputs": inputs}}, ["net"], tmp_path).value("net.dit")


def test_dit_builder_is_seeded_and_outputs_the_input_shape(tmp_path):
    net = dit_node(tmp_path, in_channels=3, num_classes=4, seed=7)
    assert isinstance(net, DiT) and net.config["num_classes"] == 4 and net.null_label == 4
    x = torch.randn(2, 3, 8, 8)
    assert net(x, torch.rand(2), Condition(labels=torch.tensor([0, 3]))).shape == (2, 3, 8, 8)
    again = dit_node(tmp_path / "b", in_channels=3, num_classes=4, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True))


def condition_dependence(model, cond_a: Condition, cond_b: Condition) -> float:
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.full((4,), 0.5)
    with torch.no_grad():
        return float((model(x, t, cond_a) - model(x, t, cond_b)).abs().mean())


def train_a_little(net: DiT, condition_fn) -> tuple[DiT, list[float]]:
    """20 flow matching steps on 8 random images (adaLN-Zero starts with the condition ignored)."""
    images = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = flow_matching_loss_fn(CondOTPath(), images, condition_fn, 8, 0.0, torch.Generator().manual_seed(2))
    return fit(net, loss, Optimisation(steps=20, lr=1e-2, warmup=2))


def test_dit_trains_with_class_conditioning(tmp_path):
    net = dit_node(tmp_path, num_classes=3)
    labels = torch.arange(8) % 3
    trained, losses = train_a_little(net, lambda index, dropped: Condition(labels=labels[index]))
    assert all(torch.isfinite(torch.tensor(losses)))
    a, b = Condition(labels=torch.zeros(4, dtype=torch.long)), Condition(labels=torch.full((4,), 2))
    assert condition_dependence(net, a, b) == 0  # zero-initialised output layer
    assert condition_dependence(trained, a, b) > 1e-3  # training made the output depend on the label


def test_dit_trains_with_text_conditioning(tmp_path):
    net = dit_node(tmp_path, num_classes=0, context_dim=8, pooled_dim=8)
    tokens = torch.randn(8, 3, 8, generator=torch.Generator().manual_seed(3))

    def text(index, dropped):
        return Condition(tokens=tokens[index], mask=torch.ones(len(index), 3, dtype=torch.bool),
                         pooled=tokens[index].mean(1))

    trained, losses = train_a_little(net, text)
    assert all(torch.isfinite(torch.tensor(losses)))
    first, second = text(torch.zeros(4, dtype=torch.long), None), text(torch.ones(4, dtype=torch.long), None)
    assert condition_dependence(trained, first, second) > 1e-3  # cross-attention / pooled text reach the output
