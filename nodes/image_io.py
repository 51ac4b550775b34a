"""Image I/O: load, load with a painted mask, save (atomic, numbered, never overwriting), preview, grid."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Annotated, NamedTuple

import torch
from PIL import Image, PngImagePlugin
from pydantic import Field

from nodegraph import Context, InputPath, ListOf, OutputPath, Widget, atomic_write_bytes, node
from nodegraph.png_workflow import KEYWORD as WORKFLOW_KEYWORD

from .sockets import IMAGE, MASK

_SAFE_PREFIX = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [0, 1] to PIL images (C = 1 grey, 3 RGB, 4 RGBA)."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] not in (1, 3, 4):
        raise ValueError(f"expected images shaped (B, C, H, W) with C in 1, 3, 4; got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("image contains NaN or infinite values")
    data = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    data = data.permute(0, 2, 3, 1).numpy()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[images.shape[1]]
    return [Image.fromarray(a[..., 0] if mode == "L" else a, mode) for a in data]


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """A PIL image to (1, C, H, W) float in [0, 1]."""
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    channels = len(image.getbands())
    return data.view(image.height, image.width, channels).permute(2, 0, 1).unsqueeze(0).float() / 255.0


def save_png_numbered(image: Image.Image, folder: Path, prefix: str, workflow_json: str | None = None) -> Path:
    """Write `prefix_00001.png` (next free number) with `atomic_write_bytes(overwrite=False)`, carrying
    `workflow_json` in a compressed iTXt chunk (`nodegraph.png_workflow`) when given.

    Publishing by hard link fails if the name exists, so two writers never overwrite each other (the
    loser takes the next number), and a reader never sees a half-written PNG under the final name.
    """
    buffer = io.BytesIO()
    info = None
    if workflow_json is not None:
        info = PngImagePlugin.PngInfo()
        info.add_itxt(WORKFLOW_KEYWORD, workflow_json, zip=True)
    image.save(buffer, format="PNG", pnginfo=info)
    pattern = re.compile(rf"^{re.escape(prefix)}_(\d+)\.png$")
    used = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    number = max(used, default=0) + 1
    while True:
        try:
            return atomic_write_bytes(folder / f"{prefix}_{number:05d}.png", buffer.getvalue(), overwrite=False)
        except FileExistsError:
            number += 1


@node("core/save_image", category="image", display_name="Save image", outputs=("paths",), side_effect=True)
def save_image(ctx: Context, images: IMAGE, folder: OutputPath = ".",
               prefix: Annotated[OutputPath, Field(pattern=_SAFE_PREFIX.pattern)] = "image") -> list:
    """Save each image as a PNG under the output folder (numbered names, never overwriting). Each file
    carries the workflow that made it (every value used), so `nodegraph run image.png` and the editor
    open it again."""
    if not _SAFE_PREFIX.match(prefix):
        raise ValueError(f"prefix {prefix!r} may use letters, digits, '_', '-' and '.' only")
    target = ctx.output_path(folder)
    workflow = ctx.workflow_json()
    return [str(save_png_numbered(img, target, prefix, workflow)) for img in tensor_to_pil(images)]


@node("core/load_image", category="image", display_name="Load image")
def load_image(ctx: Context, path: Annotated[InputPath, Widget(kind="image")]) -> IMAGE:
    """Load a PNG or JPEG file as a (1, C, H, W) image in [0, 1] (the editor can upload one)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"no image file at {file}")
    with Image.open(file) as image:
        return pil_to_tensor(image).to(ctx.device)


def read_mask(file: Path, size: tuple[int, int]) -> torch.Tensor:
    """A mask PNG as (1, 1, H, W) in [0, 1] at `size` = (width, height): its luminance (white = 1; an
    alpha channel multiplies it, so transparent pixels are 0), resized bilinearly if its size differs."""
    with Image.open(file) as image:
        grey = image.convert("LA")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    values = pil_to_tensor(grey.convert("RGBA"))  # L -> RGB grey, A kept
    return values[:, :1] * values[:, 3:4]


class ImageAndMask(NamedTuple):
    image: IMAGE
    mask: MASK


@node("core/paint_mask", category="image", display_name="Load image + painted mask")
def paint_mask(ctx: Context, path: Annotated[InputPath, Widget(kind="image")],
               mask: Annotated[InputPath | None, Widget(kind="mask", over="path")] = None) -> ImageAndMask:
    """An image (as RGB, (1, 3, H, W) in [0, 1]) and the mask painted over it in the editor (brush, eraser,
    size; saved as a PNG in the editor's inputs folder and referenced by path, so the workflow runs
    headless too). The mask is the PNG's luminance, white = 1 = repaint, resized to the image; no mask
    means nothing to repaint (all 0). Feed `mask` to core/inpaint_solver."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"no image file at {file}")
    with Image.open(file) as image:
        rgb = image.convert("RGB")
    picture = pil_to_tensor(rgb)
    if mask is None:
        painted = torch.zeros(1, 1, rgb.height, rgb.width)
    else:
        mask_file = Path(mask).expanduser()
        if not mask_file.is_file():
            raise FileNotFoundError(f"no mask file at {mask_file}")
        painted = read_mask(mask_file, rgb.size)
    return ImageAndMask(picture.to(ctx.device), painted.to(ctx.device))


@node("core/preview_image", category="image", display_name="Preview image", output_node=True)
def preview_image(images: IMAGE) -> IMAGE:
    """Show images in the browser (and return them) without writing files."""
    return images


@node("core/image_grid", category="image", display_name="Image grid")
def image_grid(images: ListOf[IMAGE], columns: Annotated[int, Field(ge=1, le=256)] = 8,
               padding: Annotated[int, Field(ge=0, le=64)] = 2,
               pad_value: Annotated[float, Field(ge=0, le=1)] = 1.0) -> IMAGE:
    """Tile a batch into one image, `columns` wide, row by row. A list of batches (one per list element,
    e.g. per guidance scale) is tiled one after the other: with `columns` = the batch size, one row each."""
    if isinstance(images, torch.Tensor):
        images = [images]
    shapes = {tuple(batch.shape[1:]) for batch in images}
    if len(shapes) != 1:
        raise ValueError(f"images of different sizes cannot share a grid: {sorted(shapes)}")
    images = torch.cat([batch if batch.dim() == 4 else batch.unsqueeze(0) for batch in images])
    batch, channels, height, width = images.shape
    columns = min(columns, batch)
    rows = (batch + columns - 1) // columns
    grid = images.new_full((1, channels, rows * (height + padding) + padding,
                            columns * (width + padding) + padding), pad_value)
    for index in range(batch):
        row, col = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        grid[0, :, top:top + height, left:left + width] = images[index]
    return grid
