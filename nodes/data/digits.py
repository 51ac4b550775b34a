"""The handwritten digits that scikit-learn ships: 1,797 real 8x8 greyscale digits, 10 classes."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from nodegraph import Context, node

from ..sockets import DATASET
from .dataset import Dataset, to_unit_range


def load_digits_tensors(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (1797, 1, size, size) in [-1, 1], labels (1797,)): pixel counts 0..16 scaled, bilinear resize."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None]
    images = to_unit_range(images, 0.0, 16.0)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


@node("core/digits_dataset", category="data", display_name="Digits dataset")
def digits_dataset(ctx: Context, size: Annotated[int, Field(ge=8, le=64)] = 16) -> DATASET:
    """scikit-learn's 1,797 handwritten digits (8x8, UCI), resized bilinearly to size x size, in [-1, 1]."""
    images, labels = load_digits_tensors(size)
    return Dataset(images, labels, num_classes=10, name=f"sklearn_digits_{size}",
                   class_names=tuple(str(i) for i in range(10))).to(ctx.device)
