"""A dataset from a NumPy .npz file (arrays only; object arrays are refused, nothing is unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nodegraph import Context, InputPath, node

from ..sockets import DATASET
from .dataset import Dataset, to_unit_range

RANGES = {"0..1": (0.0, 1.0), "-1..1": (-1.0, 1.0), "0..255": (0.0, 255.0)}


def read_array_file(file: str, value_range: Literal["auto", "0..1", "-1..1", "0..255", "raw"] = "auto") -> Dataset:
    """Load key `images` (N, C, H, W), (N, H, W) or (N, D) points, optional `labels` (N,) ints and
    `captions` (N,) strings. Images are mapped to [-1, 1] from `value_range` (auto: uint8 -> 0..255,
    else 0..1 if all values are >= 0, else -1..1); points (N, D) are kept as they are with "raw"."""
    path = Path(file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"array file {str(path)!r} does not exist")
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{str(path)!r} is not a .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = sorted(archive.files)
            array = archive["images"] if "images" in names else None
            labels = archive["labels"] if "labels" in names else None
            captions = archive["captions"] if "captions" in names else None
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read {str(path)!r} as .npz: {error}") from error
    if array is None:
        raise ValueError(f"{str(path)!r} has no 'images' array (it has {names})")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim not in (2, 4):
        raise ValueError(f"'images' must be (N, C, H, W), (N, H, W) or (N, D); got shape {array.shape}")
    images = torch.from_numpy(np.ascontiguousarray(array))
    if value_range == "auto":
        value_range = "0..255" if array.dtype == np.uint8 else "0..1" if float(array.min()) >= 0 else "-1..1"
    images = images.float() if value_range == "raw" else to_unit_range(images, *RANGES[value_range])
    label_tensor, num_classes = None, 0
    if labels is not None:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("'labels' must be an integer array")
        label_tensor = torch.from_numpy(labels.astype(np.int64).reshape(-1))
        num_classes = int(label_tensor.max()) + 1 if label_tensor.numel() else 0
    caption_tuple = None if captions is None else tuple(str(c) for c in captions.tolist())
    return Dataset(images, label_tensor, caption_tuple, num_classes, name=path.stem)


@node("core/array_file_dataset", category="data", display_name="Array file dataset (.npz)")
def array_file_dataset(ctx: Context, file: InputPath,
                       value_range: Literal["auto", "0..1", "-1..1", "0..255", "raw"] = "auto") -> DATASET:
    """A .npz with `images` ((N, C, H, W), (N, H, W) or (N, D) points), optional `labels` and `captions`;
    images are scaled to [-1, 1] from value_range."""
    return read_array_file(file, value_range).to(ctx.device)
