"""The shapes VAE: shapes of encode/decode, safetensors round trip, the trainer, the shipped weights."""

import pytest
import torch

from nodes.data.shapes import make_shapes
from nodes.models.vae import BUNDLED, AutoencoderKL, kl_divergence, load_vae, resolve_vae_file, save_vae
from nodes.training.vae_training import latent_scaling_factor, train_vae_loop


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


def test_safetensors_round_trip_keeps_weights_and_scaling(tmp_path):
    vae = AutoencoderKL(channels=(8, 16), scaling_factor=0.77).eval()
    path = save_vae(vae, tmp_path / "v.safetensors")
    loaded = load_vae(path)
    assert loaded.scaling_factor == pytest.approx(0.77) and loaded.config == vae.config
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.images_to_latents(x), vae.images_to_latents(x))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_load_refuses_other_checkpoints(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "x.safetensors"), metadata={"kind": "backbone"})
    with pytest.raises(ValueError, match="not a VAE"):
        load_vae(tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        resolve_vae_file(str(tmp_path / "missing.safetensors"))


def test_trainer_overfits_one_batch_and_sets_unit_latent_scale():
    images = make_shapes(4, seed=5, size=16).images
    vae, losses = train_vae_loop(images, steps=200, batch_size=4, lr=1e-2, kl_weight=1e-4, seed=0, channels=(8, 16))
    first, last = losses[0], sum(losses[-10:]) / 10
    assert last < first / 10, (first, last)
    # scaling factor = 1 / std of posterior samples, so scaled samples have unit std
    gen = torch.Generator().manual_seed(0)
    mu, logvar = vae.encode(images)
    samples = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    assert float((samples * vae.scaling_factor).std()) == pytest.approx(1.0, rel=1e-4)
    assert latent_scaling_factor(vae, images) == pytest.approx(vae.scaling_factor)


SHIPPED = BUNDLED["shapes"]
MSE_BOUND = 1e-3
"""Measured 3.8e-4 for the shipped VAE (1,500 steps); the bound leaves room for retraining noise."""


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shapes VAE weights not shipped yet")
def test_shipped_vae_reconstructs_held_out_shapes():
    """Held-out seed (never used in training): mean squared error in [0, 1] pixels stays small."""
    vae = load_vae(resolve_vae_file("shapes"))
    images = (make_shapes(256, seed=12345).images + 1) / 2
    recon = vae.latents_to_images(vae.images_to_latents(images))
    mse = float((recon - images).pow(2).mean())
    assert mse < MSE_BOUND, mse
    latents = vae.images_to_latents(images)
    assert 0.7 < float(latents.std()) < 1.3  # the stored scaling factor gives latents of about unit scale

