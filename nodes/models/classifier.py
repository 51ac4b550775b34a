"""A noisy-time image classifier p_t(y | x_t): classifier(x, t) -> logits (B, num_classes).

Trained on x_t drawn from a probability path, its gradient d/dx log p_t(y|x) steers sampling
(classifier guidance). Evaluated at t = 1 on clean images it is a plain classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..broadcast import batch_times
from .layers import TimeEmbedding, group_norm
from .unet import ResBlock


class NoisyClassifier(nn.Module):
    """Time-conditioned ResNet: per level a ResBlock then 2x downsampling; mean pool; linear head."""

    arch = "classifier"

    def __init__(self, in_channels: int = 1, image_size: int = 16, channels: int = 32,
                 channel_mults: tuple[int, ...] | list[int] = (1, 2, 2), num_classes: int = 10) -> None:
        super().__init__()
        self.config: dict[str, Any] = dict(in_channels=in_channels, image_size=image_size, channels=channels,
                                           channel_mults=list(channel_mults), num_classes=num_classes)
        self.num_classes = num_classes
        emb_dim = 4 * channels
        self.time_embed = TimeEmbedding(channels, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = channels
        for level, mult in enumerate(channel_mults):
            self.blocks.append(ResBlock(ch, channels * mult, emb_dim))
            ch = channels * mult
            last = level == len(channel_mults) - 1
            self.downs.append(nn.Identity() if last else nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.norm = group_norm(ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        emb = self.time_embed(batch_times(t, x.shape[0], x.device))
        h = self.conv_in(x)
        for block, down in zip(self.blocks, self.downs, strict=True):
            h = down(block(h, emb))
        return self.head(nn.functional.silu(self.norm(h)).mean(dim=(2, 3)))
