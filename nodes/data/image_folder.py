"""Images from a folder: labels from sub-folder names, or captions from a captions file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from nodegraph import Context, InputPath, node

from ..sockets import DATASET
from .dataset import Dataset, to_unit_range

EXTENSIONS = (".png", ".jpg", ".jpeg")
CAPTION_FILES = ("captions.json", "captions.txt")


def _read_captions(folder: Path) -> dict[str, str] | None:
    """captions.json: {"file.png": "caption", ...}; captions.txt: one `file.png<TAB>caption` a line."""
    for name in CAPTION_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError(f"{path} must map file names to caption strings")
            return data
        captions = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if "\t" not in line:
                raise ValueError(f"{path}:{number}: expected 'file<TAB>caption'")
            file, text = line.split("\t", 1)
            captions[file.strip()] = text.strip()
        return captions
    return None


def _load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8).copy()
    except OSError as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
    tensor = torch.from_numpy(array)
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1)


def read_image_folder(folder: str, size: int = 32, channels: int = 3,
                      labels: Literal["auto", "subfolders", "captions", "none"] = "auto") -> Dataset:
    """Load every PNG/JPEG under `folder` (sorted), resized to size x size, into [-1, 1].

    subfolders: each direct sub-folder is a class (sorted names -> ids 0..K-1).
    captions: a captions.json / captions.txt in the folder names each image's caption (by relative path).
    auto: captions if a captions file exists, else sub-folders if there are any, else no labels.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{str(root)!r} is not a folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not files:
        raise ValueError(f"image folder {str(root)!r} holds no PNG or JPEG images")
    captions_map = _read_captions(root)
    subfolders = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    if labels == "auto":
        labels = "captions" if captions_map is not None else "subfolders" if subfolders else "none"
    if labels == "captions":
        if captions_map is None:
            raise ValueError(f"no {' or '.join(CAPTION_FILES)} in {str(root)!r}")
        files = [p for p in files if p.relative_to(root).as_posix() in captions_map]
        if not files:
            raise ValueError(f"the captions file in {str(root)!r} names none of its images")
    if labels == "subfolders":
        files = [p for p in files if len(p.relative_to(root).parts) > 1]
        if not subfolders:
            raise ValueError(f"{str(root)!r} has no sub-folders with images to use as classes")
    images = torch.stack([_load_image(p, size, channels) for p in files])
    images = to_unit_range(images, 0.0, 255.0)
    name = root.name or "images"
    if labels == "subfolders":
        ids = {name: i for i, name in enumerate(subfolders)}
        label_tensor = torch.tensor([ids[p.relative_to(root).parts[0]] for p in files], dtype=torch.long)
        return Dataset(images, label_tensor, num_classes=len(subfolders), name=name, class_names=tuple(subfolders))
    if labels == "captions":
        assert captions_map is not None
        return Dataset(images, captions=tuple(captions_map[p.relative_to(root).as_posix()] for p in files), name=name)
    return Dataset(images, name=name)


@node("core/image_folder_dataset", category="data", display_name="Image folder dataset")
def image_folder_dataset(ctx: Context, folder: InputPath, size: Annotated[int, Field(ge=4, le=1024)] = 32,
                         channels: Literal[1, 3] = 3,
                         labels: Literal["auto", "subfolders", "captions", "none"] = "auto") -> DATASET:
    """PNG/JPEG images under `folder`, resized to size x size in [-1, 1]; class per sub-folder or a
    caption per image from captions.json ({"file.png": "text"}) or captions.txt (file<TAB>text lines)."""
    return read_image_folder(folder, size, channels, labels).to(ctx.device)
