"""Nodes that create untrained networks (weights drawn from `seed`), ready for a training node."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, node

from ..annotations import Prediction, Seed
from ..sockets import CLASSIFIER, DIT, MLP, UNET
from .classifier import NoisyClassifier
from .dit import DiT
from .mlp import MLPBackbone
from .unet import UNet

Width = Annotated[int, Field(ge=4, le=1024)]


def seeded(build, seed: int, device: str) -> torch.nn.Module:  # noqa: ANN001
    """Build a module with torch's default init drawn from `seed` (CPU, then moved), leaving global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().to(device)


def _classes(num_classes: int) -> int | None:
    return num_classes or None


@node("core/unet", category="models", display_name="U-Net (new)")
def unet(ctx: Context, image_size: Annotated[int, Field(ge=4, le=512)] = 16,
         in_channels: Annotated[int, Field(ge=1, le=64)] = 1, channels: Width = 32,
         channel_mults: list[Annotated[int, Field(ge=1, le=16)]] = [1, 2, 2],  # noqa: B006
         num_res_blocks: Annotated[int, Field(ge=1, le=8)] = 1,
         attention_resolutions: list[Annotated[int, Field(ge=1, le=512)]] = [8],  # noqa: B006
         heads: Annotated[int, Field(ge=1, le=32)] = 4, num_classes: Annotated[int, Field(ge=0, le=100000)] = 10,
         context_dim: Annotated[int, Field(ge=0, le=4096)] = 0, pooled_dim: Annotated[int, Field(ge=0, le=4096)] = 0,
         prediction: Prediction = "velocity", seed: Seed = 0) -> UNET:
    """An untrained U-Net f(x, t, cond). num_classes > 0: labels with null id = num_classes;
    context_dim > 0: cross-attention to text tokens; pooled_dim > 0: pooled text added to the time embedding."""
    return seeded(lambda: UNet(in_channels, in_channels, image_size, channels, channel_mults, num_res_blocks,
                               attention_resolutions, heads, _classes(num_classes), context_dim or None,
                               pooled_dim or None, 0.0, prediction), seed, ctx.device)


@node("core/dit", category="models", display_name="DiT (new)")
def dit(ctx: Context, image_size: Annotated[int, Field(ge=4, le=512)] = 16,
        in_channels: Annotated[int, Field(ge=1, le=64)] = 1, patch_size: Annotated[int, Field(ge=1, le=32)] = 2,
        dim: Width = 96, depth: Annotated[int, Field(ge=1, le=48)] = 4, heads: Annotated[int, Field(ge=1, le=32)] = 4,
        num_classes: Annotated[int, Field(ge=0, le=100000)] = 10, context_dim: Annotated[int, Field(ge=0, le=4096)] = 0,
        pooled_dim: Annotated[int, Field(ge=0, le=4096)] = 0, prediction: Prediction = "velocity",
        seed: Seed = 0) -> DIT:
    """An untrained diffusion transformer (patchify, adaLN-Zero blocks; text through cross-attention)."""
    return seeded(lambda: DiT(in_channels, in_channels, image_size, patch_size, dim, depth, heads,
                              _classes(num_classes), context_dim or None, pooled_dim or None, prediction),
                  seed, ctx.device)


@node("core/mlp_backbone", category="models", display_name="MLP (new)")
def mlp_backbone(ctx: Context, dim: Annotated[int, Field(ge=1, le=4096)] = 2, hidden: Width = 128,
                 depth: Annotated[int, Field(ge=1, le=32)] = 3, num_classes: Annotated[int, Field(ge=0, le=100000)] = 0,
                 prediction: Prediction = "velocity", seed: Seed = 0) -> MLP:
    """An untrained MLP f(x, t, y) for (B, D) points, with optional class labels (null id = num_classes)."""
    return seeded(lambda: MLPBackbone(dim, hidden, depth, 32, _classes(num_classes), prediction), seed, ctx.device)


@node("core/noisy_classifier", category="models", display_name="Noisy classifier (new)")
def noisy_classifier(ctx: Context, image_size: Annotated[int, Field(ge=4, le=512)] = 16,
                     in_channels: Annotated[int, Field(ge=1, le=64)] = 1, channels: Width = 32,
                     channel_mults: list[Annotated[int, Field(ge=1, le=16)]] = [1, 2, 2],  # noqa: B006
                     num_classes: Annotated[int, Field(ge=2, le=100000)] = 10,
                     seed: Seed = 0) -> CLASSIFIER:
    """An untrained time-conditioned classifier(x, t) -> logits."""
    return seeded(lambda: NoisyClassifier(in_channels, image_size, channels, channel_mults, num_classes),
                  seed, ctx.device)
