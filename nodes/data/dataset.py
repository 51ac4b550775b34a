"""The DATASET value: tensors on the run's device that training nodes draw batches from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Dataset:
    """Examples as tensors: images (N, C, H, W) in [-1, 1] (or (N, D) points), labels (N,) long or None,
    one caption per example or None, num_classes (0 when unlabelled) and a name for checkpoint metadata.
    """

    images: torch.Tensor
    labels: torch.Tensor | None = None
    captions: tuple[str, ...] | None = None
    num_classes: int = 0
    name: str = "dataset"
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if n == 0:
            raise ValueError(f"dataset {self.name!r} has no examples")
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise ValueError(f"labels have shape {tuple(self.labels.shape)}, expected ({n},)")
            if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= max(self.num_classes, 1)):
                raise ValueError(f"labels must lie in [0, {self.num_classes})")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"{len(self.captions)} captions for {n} examples")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Dataset:
        labels = None if self.labels is None else self.labels.to(device)
        return Dataset(self.images.to(device), labels, self.captions, self.num_classes, self.name, self.class_names)

    def subset(self, index: torch.Tensor) -> Dataset:
        """The examples at `index` (a (K,) long tensor), in that order."""
        index = index.to(self.images.device)
        labels = None if self.labels is None else self.labels[index]
        captions = None if self.captions is None else tuple(self.captions[i] for i in index.tolist())
        return Dataset(self.images[index], labels, captions, self.num_classes, self.name, self.class_names)

    def describe(self) -> dict[str, object]:
        """Short JSON summary (stored in checkpoint metadata as the training data)."""
        return {"name": self.name, "size": len(self), "shape": list(self.images.shape[1:]),
                "num_classes": self.num_classes}


def sample_indices(size: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size indices drawn uniformly with replacement from range(size), on the generator's device."""
    return torch.randint(0, size, (batch_size,), generator=generator, device=generator.device)


def to_unit_range(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Map values from [low, high] linearly to [-1, 1] (float32), clamped."""
    return ((images.float() - low) / (high - low) * 2 - 1).clamp(-1, 1)
