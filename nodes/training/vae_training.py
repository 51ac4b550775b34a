"""Training a VAE on a dataset's images: reconstruction + kl_weight * KL, then the latent scaling factor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, node

from ..image_io import resolve_output_folder
from ..models.vae import AutoencoderKL, kl_divergence, save_vae
from ..sockets import DATASET, VAE


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of posterior samples z = mu + sigma eps over `images` (pixels in [-1, 1])."""
    gen = torch.Generator(device=images.device).manual_seed(0)
    samples = []
    for i in range(0, images.shape[0], batch_size):
        mu, logvar = vae.encode(images[i:i + batch_size])
        eps = torch.randn(mu.shape, generator=gen, device=mu.device)
        samples.append(mu + torch.exp(0.5 * logvar) * eps)
    return float(1.0 / torch.cat(samples).std().clamp_min(1e-8))


def train_vae_loop(images: torch.Tensor, *, steps: int, batch_size: int, lr: float, kl_weight: float,
                   seed: int, channels: tuple[int, ...] = (32, 64), latent_channels: int = 4,
                   device: str = "cpu", progress=None) -> tuple[AutoencoderKL, list[float]]:
    """AdamW on mean ||decode(z) - x||^2 + kl_weight * mean KL; returns the frozen VAE and the loss per step.

    Batches are drawn uniformly with replacement from `images` ((N, C, H, W) in [-1, 1]) by a seeded
    generator; the learning rate decays with a cosine to 10 % of `lr`.
    """
    torch.manual_seed(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    vae = AutoencoderKL(images.shape[1], latent_channels, channels).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / max(steps, 1))).item()))
    losses = []
    for step in range(steps):
        idx = torch.randint(images.shape[0], (min(batch_size, images.shape[0]),), generator=gen)
        x = images[idx].to(device)
        recon, mu, logvar = vae(x, generator=None)
        loss = (recon - x).pow(2).mean() + kl_weight * kl_divergence(mu, logvar)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, steps, loss=losses[-1])
    vae.eval().requires_grad_(False)
    vae.scaling_factor = latent_scaling_factor(vae, images[:4096].to(device))
    return vae, losses


@node("core/train_vae", category="training", display_name="Train VAE")
def train_vae(ctx: Context, dataset: DATASET, steps: Annotated[int, Field(ge=1, le=1_000_000)] = 2000,
              batch_size: Annotated[int, Field(ge=1, le=4096)] = 64,
              lr: Annotated[float, Field(gt=0, le=1)] = 2e-3,
              kl_weight: Annotated[float, Field(ge=0, le=10)] = 1e-4,
              latent_channels: Annotated[int, Field(ge=1, le=64)] = 4,
              channels: list[Annotated[int, Field(ge=4, le=1024)]] = [32, 64],  # noqa: B006
              seed: Annotated[int, Field(ge=0)] = 0) -> VAE:
    """Train a KL-regularised autoencoder on the dataset's images (in [-1, 1]):
    loss = mean (decode(mu + sigma eps) - x)^2 + kl_weight * mean KL(N(mu, sigma^2) || N(0, 1)).
    Each level of `channels` halves the side. Afterwards scaling_factor = 1 / std(latents)."""
    vae, _ = train_vae_loop(dataset.images, steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight,
                            seed=seed, channels=tuple(channels), latent_channels=latent_channels,
                            device=ctx.device, progress=ctx.progress)
    return vae


@node("core/save_vae", category="training", display_name="Save VAE", outputs=("path",), side_effect=True)
def save_vae_node(ctx: Context, vae: VAE, filename: str = "vae.safetensors") -> str:
    """Write the VAE (weights, config and scaling factor) as safetensors under the output folder."""
    if not filename.endswith(".safetensors") or Path(filename).is_absolute():
        raise ValueError(f"filename {filename!r} must be a relative path ending in .safetensors")
    target = resolve_output_folder(ctx.output_dir, str(Path(filename).parent)) / Path(filename).name
    return str(save_vae(vae, target))
