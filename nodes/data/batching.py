"""Take a batch from a DATASET: images, the class labels as a condition, and the captions."""

from __future__ import annotations

from typing import Annotated, NamedTuple

import torch
from pydantic import Field

from nodegraph import JSON, Context, node

from ..annotations import Seed
from ..conditioning import Condition
from ..sockets import CONDITIONING, DATASET, LATENT
from .dataset import Dataset


class DatasetBatch(NamedTuple):
    images: LATENT
    labels: CONDITIONING
    captions: JSON


def batch_indices(size: int, batch_size: int, index: int, shuffle: bool, generator: torch.Generator) -> torch.Tensor:
    """Indices of batch number `index` of one epoch: a seeded permutation (shuffle) or 0..N-1, wrapping around."""
    order = torch.randperm(size, generator=generator, device=generator.device) if shuffle \
        else torch.arange(size, device=generator.device)
    positions = (index * batch_size + torch.arange(batch_size, device=order.device)) % size
    return order[positions]


@node("core/dataset_batch", category="data", display_name="Dataset batch")
def dataset_batch(ctx: Context, dataset: DATASET, batch_size: Annotated[int, Field(ge=1, le=4096)] = 16,
                  index: Annotated[int, Field(ge=0)] = 0, shuffle: bool = True,
                  seed: Seed = 0) -> DatasetBatch:
    """Batch `index` of an epoch (shuffled by `seed`): images in [-1, 1], labels as a condition, captions."""
    if not isinstance(dataset, Dataset):
        raise TypeError(f"expected a labelled DATASET, got {type(dataset).__name__}")
    generator = ctx.generator(seed, device=str(dataset.images.device))
    part = dataset.subset(batch_indices(len(dataset), batch_size, index, shuffle, generator))
    condition = Condition(labels=part.labels, prompts=part.captions)
    return DatasetBatch(part.images, condition, list(part.captions or ()))
