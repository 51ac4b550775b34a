"""The shapes VAE: encode/decode shapes, the one checkpoint format (round trip, old files), the trainer,
the shipped weights."""

import json

import pytest
import torch
from safetensors.torch import save_file

from nodes.data.shapes import make_shapes
from nodes.models.checkpoint import CheckpointError, load_model, read_metadata, save_model
from nodes.models.vae import AutoencoderKL, kl_divergence
from nodes.models.vae_nodes import BUNDLED, resolve_vae_file
from nodes.training.common import fit
from nodes.training.vae_training import latent_scaling_factor, vae_loss_fn, vae_optimisation

from .test_training import one_thread  # noqa: F401  (autouse: one thread for tiny models)


def test_encode_decode_shapes_and_ranges():
    vae = AutoencoderKL(scaling_factor=0.5).eval()
    images = torch.rand(3, 3, 32, 32)
    latents = vae.images_to_latents(images)
    assert latents.shape == (3, 4, 8, 8)
    mu, _ = vae.encode(images * 2 - 1)
    assert torch.allclose(latents, 0.5 * mu)  # encode = scaling_factor * posterior mean of 2x - 1
    decoded = vae.latents_to_images(latents)
    assert decoded.shape == (3, 3, 32, 32) and decoded.min() >= 0 and decoded.max() <= 1
    assert torch.allclose(decoded, ((vae.decode(mu) + 1) / 2).clamp(0, 1), atol=1e-6)  # decode divides it back


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(2, 4, 8, 8)
    assert kl_divergence(zeros, zeros) == 0
    assert kl_divergence(zeros + 1, zeros) == pytest.approx(0.5)  # mu^2 / 2
    assert kl_divergence(zeros, zeros + 1) == pytest.approx(0.5 * (torch.e - 2))


def small_vae(scaling_factor: float = 0.77) -> AutoencoderKL:
    torch.manual_seed(3)
    return AutoencoderKL(channels=(8, 16), scaling_factor=scaling_factor).eval()


def test_checkpoint_round_trip_is_exact_and_keeps_scaling(tmp_path):
    vae = small_vae()
    vae.scaling_factor = 0.61  # set after construction, as training does
    path = save_model(vae, tmp_path / "v.safetensors")
    meta = read_metadata(path)
    assert meta["kind"] == "vae" and meta["config"]["scaling_factor"] == 0.61
    loaded = load_model(path, kind="vae")
    assert loaded.scaling_factor == 0.61 and loaded.config == vae.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vae.state_dict().values(), strict=True))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.images_to_latents(x), vae.images_to_latents(x))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_old_format_vae_files_still_load(tmp_path):
    """Files written before VAEs used the model format: flat string metadata, config as a JSON string."""
    vae = small_vae()
    state = {k: v.contiguous() for k, v in vae.state_dict().items()}
    old = {"kind": "vae", "arch": "autoencoder_kl", "scaling_factor": repr(0.77),
           "config": json.dumps({"in_channels": 3, "latent_channels": 4, "channels": [8, 16]})}
    save_file(state, str(tmp_path / "old.safetensors"), metadata=old)
    loaded = load_model(tmp_path / "old.safetensors", kind="vae")
    assert loaded.scaling_factor == 0.77
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values(), strict=True))
    rewritten = save_model(loaded, tmp_path / "new.safetensors")  # the one-line conversion
    assert read_metadata(rewritten)["format"] == "nodegraph/model"


def test_loading_is_strict_and_names_the_bad_keys(tmp_path):
    vae = small_vae()
    path = save_model(vae, tmp_path / "v.safetensors")
    tensors = {k: v.contiguous() for k, v in vae.state_dict().items()}
    header = {"nodegraph": json.dumps(read_metadata(path))}
    tensors.pop("decoder.0.bias")
    tensors["encoder.0.weight"] = torch.zeros(1)
    tensors["extra"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=header)
    with pytest.raises(CheckpointError, match=r"missing: decoder\.0\.bias; unexpected: extra; "
                                              r"wrong shape: encoder\.0\.weight"):
        load_model(tmp_path / "bad.safetensors", kind="vae")


def test_load_refuses_other_checkpoints(tmp_path):
    save_file({"w": torch.zeros(1)}, str(tmp_path / "x.safetensors"), metadata={"kind": "backbone"})
    with pytest.raises(CheckpointError, match="no nodegraph metadata"):
        load_model(tmp_path / "x.safetensors", kind="vae")
    with pytest.raises(CheckpointError, match="holds a backbone"):
        load_model(BUNDLED["shapes"].with_name("digits_cfg_unet.safetensors"), kind="vae")
    with pytest.raises(FileNotFoundError):
        resolve_vae_file(str(tmp_path / "missing.safetensors"))


def test_trainer_overfits_one_batch_and_sets_unit_latent_scale():
    images = make_shapes(4, seed=5, size=16).images
    loss = vae_loss_fn(images, 4, 1e-4, torch.Generator().manual_seed(0))
    vae, losses = fit(small_vae(1.0), loss, vae_optimisation(200, 1e-2))
    first, last = losses[0], sum(losses[-10:]) / 10
    assert last < first / 10, (first, last)
    vae.scaling_factor = latent_scaling_factor(vae, images)
    # scaling factor = 1 / std of posterior samples, so scaled samples have unit std
    gen = torch.Generator().manual_seed(0)
    mu, logvar = vae.encode(images)
    samples = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    assert float((samples * vae.scaling_factor).std()) == pytest.approx(1.0, rel=1e-4)


SHIPPED = BUNDLED["shapes"]
MSE_BOUND = 1e-3
"""Measured 3.8e-4 for the shipped VAE (1,500 steps); the bound leaves room for retraining noise."""


def test_shipped_vae_is_in_the_model_format_and_reconstructs_held_out_shapes():
    """Held-out seed (never used in training): mean squared error in [0, 1] pixels stays small."""
    meta = read_metadata(SHIPPED)
    assert meta["format"] == "nodegraph/model" and meta["kind"] == "vae" and meta["training"]["objective"] == "vae"
    vae = load_model(resolve_vae_file("shapes"), kind="vae")
    images = (make_shapes(256, seed=12345).images + 1) / 2
    recon = vae.latents_to_images(vae.images_to_latents(images))
    mse = float((recon - images).pow(2).mean())
    assert mse < MSE_BOUND, mse
    latents = vae.images_to_latents(images)
    assert 0.7 < float(latents.std()) < 1.3  # the stored scaling factor gives latents of about unit scale
