"""A small convolutional VAE: images (B, 3, 32, 32) in [-1, 1] <-> latents (B, 4, 8, 8).

The encoder gives a diagonal Gaussian q(z|x) = N(mu, exp(logvar)); training minimises
||decode(z) - x||^2 + kl_weight * KL(q(z|x) || N(0, I)). Generative models work on
`scaling_factor * z`, with scaling_factor = 1 / std of the training latents, so that latents have
unit scale like the Gaussian noise the paths start from. Weights: safetensors with the config and
the scaling factor in the metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nodegraph import Context, FilePath, node

from ..sockets import IMAGE, LATENT, VAE
from .layers import group_norm

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUNDLED = {"shapes": WEIGHTS_DIR / "shapes_vae.safetensors"}
"""Names of the VAEs shipped with the project and their files."""


class _Res(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                  group_norm(ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AutoencoderKL(nn.Module):
    """Encoder: conv, then per level a residual block and a stride-2 conv; a 1x1 conv to (mu, logvar).
    Decoder mirrors it with nearest upsampling. `downsample` levels divide the side by 2^downsample."""

    arch = "autoencoder_kl"

    def __init__(self, in_channels: int = 3, latent_channels: int = 4, channels: tuple[int, ...] | list[int] = (32, 64),
                 scaling_factor: float = 1.0) -> None:
        super().__init__()
        channels = list(channels)
        self.config: dict[str, Any] = dict(in_channels=in_channels, latent_channels=latent_channels, channels=channels)
        self.scaling_factor = float(scaling_factor)
        self.latent_channels = latent_channels
        self.downsample = len(channels)
        enc: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        ch = channels[0]
        for width in channels:
            enc += [_Res(ch), nn.Conv2d(ch, width, 3, stride=2, padding=1)]
            ch = width
        enc += [_Res(ch), group_norm(ch), nn.SiLU(), nn.Conv2d(ch, 2 * latent_channels, 1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, ch, 3, padding=1), _Res(ch)]
        for width in reversed(channels):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, width, 3, padding=1), _Res(width)]
            ch = width
        dec += [group_norm(ch), nn.SiLU(), nn.Conv2d(ch, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels in [-1, 1] to the posterior's (mu, logvar), each (B, latent_channels, H/2^k, W/2^k)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents to pixels (about [-1, 1])."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction from a posterior sample z = mu + exp(logvar / 2) eps, with mu and logvar."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return self.decode(mu + torch.exp(0.5 * logvar) * eps), mu, logvar

    @torch.no_grad()
    def images_to_latents(self, images: torch.Tensor) -> torch.Tensor:
        """IMAGE in [0, 1] -> scaling_factor * mu(2 x - 1) (the posterior mean: deterministic)."""
        return self.encode(images * 2 - 1)[0] * self.scaling_factor

    @torch.no_grad()
    def latents_to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> IMAGE in [0, 1]: (decode(latents / scaling_factor) + 1) / 2, clamped."""
        return ((self.decode(latents / self.scaling_factor) + 1) / 2).clamp(0, 1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mu, e^logvar) || N(0, 1)) = (mu^2 + e^logvar - 1 - logvar) / 2."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()


def save_vae(vae: AutoencoderKL, path: str | Path) -> Path:
    """Write weights + metadata (arch, config JSON, scaling factor) as safetensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in vae.state_dict().items()}
    meta = {"kind": "vae", "arch": vae.arch, "config": json.dumps(vae.config),
            "scaling_factor": repr(vae.scaling_factor)}
    save_file(state, str(path), metadata=meta)
    return path


def load_vae(path: str | Path, device: str = "cpu") -> AutoencoderKL:
    """Rebuild a VAE from a safetensors file written by `save_vae` (no unpickling), frozen, in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("kind") != "vae" or meta.get("arch") != AutoencoderKL.arch:
        raise ValueError(f"{path} is not a VAE checkpoint "
                         f"(metadata kind={meta.get('kind')!r}, arch={meta.get('arch')!r})")
    vae = AutoencoderKL(**json.loads(meta["config"]), scaling_factor=float(meta["scaling_factor"]))
    vae.load_state_dict(load_file(str(path)))
    return vae.requires_grad_(False).eval().to(device)


def resolve_vae_file(name: str) -> Path:
    """A bundled name ("shapes") or a path to a .safetensors file."""
    path = BUNDLED.get(name) or Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no VAE weights at {path} (bundled names: {sorted(BUNDLED)})")
    return path


@node("core/vae_loader", category="models", display_name="Load VAE")
def vae_loader(ctx: Context, weights: FilePath = "shapes") -> VAE:
    """Load a VAE from safetensors: "shapes" (shipped, 32x32 RGB <-> 4x8x8) or a file path."""
    return load_vae(resolve_vae_file(weights), ctx.device)


@node("core/vae_encode", category="models", display_name="VAE encode")
def vae_encode(vae: VAE, images: IMAGE) -> LATENT:
    """Images in [0, 1] to latents: scaling_factor * mu(2 x - 1), the posterior mean scaled to unit std."""
    return vae.images_to_latents(images.to(next(vae.parameters()).device))


@node("core/vae_decode", category="models", display_name="VAE decode")
def vae_decode(vae: VAE, latents: LATENT) -> IMAGE:
    """Latents to images in [0, 1]: (decode(z / scaling_factor) + 1) / 2, clamped."""
    return vae.latents_to_images(latents.to(next(vae.parameters()).device))
