"""A small convolutional VAE: images (B, 3, 32, 32) in [-1, 1] <-> latents (B, 4, 8, 8).

The encoder gives a diagonal Gaussian q(z|x) = N(mu, exp(logvar)); training minimises
||decode(z) - x||^2 + kl_weight * KL(q(z|x) || N(0, I)). Generative models work on
`scaling_factor * z`, with scaling_factor = 1 / std of the training latents, so that latents have
unit scale like the Gaussian noise the paths start from. Checkpoints use the one model format of
`nodes.models.checkpoint` (the scaling factor is part of the config); the nodes are in `vae_nodes`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .layers import group_norm


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
        self.in_channels, self.channels = in_channels, channels
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

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments; a property because training sets `scaling_factor` after construction."""
        return dict(in_channels=self.in_channels, latent_channels=self.latent_channels, channels=self.channels,
                    scaling_factor=self.scaling_factor)

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
