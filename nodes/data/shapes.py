"""Procedurally generated captioned shapes: one coloured shape on a plain background, with a caption.

Every example is drawn from its attributes (shape, colour, size, position, background), which are
sampled from a seeded generator, so the same seed gives the same images and captions on any
machine. Shapes are anti-aliased by supersampling: each pixel is the mean coverage of a
`supersample x supersample` grid of sub-pixel points. Images are (N, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, node

from ..annotations import Seed
from ..sockets import DATASET, IMAGE
from .dataset import Dataset

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.25, 0.95), "yellow": (0.95, 0.85, 0.1),
}
SIZES: dict[str, float] = {"small": 0.13, "large": 0.23}
"""Circumradius of the shape as a fraction of the image side."""
POSITIONS: dict[str, tuple[float, float]] = {
    "top left": (0.27, 0.27), "top right": (0.73, 0.27), "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73), "center": (0.5, 0.5),
}
"""Centre (x, y) as fractions of the image side; y grows downwards."""
BACKGROUNDS: dict[str, tuple[float, float, float]] = {
    "white": (0.97, 0.97, 0.97), "black": (0.05, 0.05, 0.05), "gray": (0.5, 0.5, 0.5),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}
"""Attribute name -> its value names; an example stores the index of each value."""
JITTER = 0.03
"""Uniform jitter of the centre (fraction of the side) and relative jitter of the size, so no two images match."""


def caption(shape: str, colour: str, size: str, position: str, background: str) -> str:
    """'a small red circle at the top left on a white background' ('in the center' for the centre)."""
    where = "in the center" if position == "center" else f"at the {position}"
    return f"a {size} {colour} {shape} {where} on a {background} background"


@dataclass(frozen=True, eq=False)
class ShapesDataset(Dataset):
    """A `Dataset` with captions and, per example, the attribute indices behind them.

    `attributes[name]` is an (N,) long tensor indexing `ATTRIBUTES[name]` (for measuring samples).
    """

    attributes: dict[str, torch.Tensor] = field(default_factory=dict)

    def attribute_names(self, index: int) -> dict[str, str]:
        """The attribute values of example `index` as names."""
        return {name: ATTRIBUTES[name][int(values[index])] for name, values in self.attributes.items()}

    def to(self, device: torch.device | str) -> ShapesDataset:
        return replace(self, images=self.images.to(device))

    def subset(self, index: torch.Tensor) -> ShapesDataset:
        """The examples at `index` (a (K,) long tensor), in that order, attributes included."""
        index = index.to(self.images.device)
        captions = tuple(self.captions[i] for i in index.tolist()) if self.captions else None
        return replace(self, images=self.images[index], captions=captions,
                       attributes={k: v[index.cpu()] for k, v in self.attributes.items()})


def _coverage(shape: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor,
              px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Inside-mask (N, P) of sample points (px, py) for each example's shape (coordinates in image sides).

    circle: |p - c| <= r. square: max(|dx|, |dy|) <= r / sqrt(2) (square inscribed in the circle).
    triangle: upward equilateral triangle inscribed in the circle, as the intersection of three half-planes.
    """
    dx, dy = px - cx[:, None], py - cy[:, None]
    r = radius[:, None]
    circle = dx * dx + dy * dy <= r * r
    square = torch.maximum(dx.abs(), dy.abs()) <= r / math.sqrt(2)
    # Triangle with apex (0, -r) and base y = r/2: inside when below the two slanted edges and above the base.
    slope = math.sqrt(3)
    triangle = (dy <= r / 2) & (dy >= -r + slope * dx.abs())
    kind = shape[:, None]
    return torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))


def render(attributes: dict[str, torch.Tensor], size: int = 32, supersample: int = 4,
           offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Draw images (N, 3, size, size) in [0, 1] from attribute indices; `offsets` (N, 3) = (dx, dy, ds) jitter."""
    n = attributes["shape"].shape[0]
    if offsets is None:
        offsets = torch.zeros(n, 3)
    centres = torch.tensor(list(POSITIONS.values()))[attributes["position"]]
    cx, cy = centres[:, 0] + offsets[:, 0], centres[:, 1] + offsets[:, 1]
    radius = torch.tensor(list(SIZES.values()))[attributes["size"]] * (1 + offsets[:, 2])
    fine = size * supersample
    coords = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine
    py, px = torch.meshgrid(coords, coords, indexing="ij")
    inside = _coverage(attributes["shape"], cx, cy, radius, px.reshape(1, -1), py.reshape(1, -1)).float()
    mask = torch.nn.functional.avg_pool2d(inside.view(n, 1, fine, fine), supersample)
    fg = torch.tensor(list(COLOURS.values()))[attributes["colour"]][:, :, None, None]
    bg = torch.tensor(list(BACKGROUNDS.values()))[attributes["background"]][:, :, None, None]
    return bg + (fg - bg) * mask


def make_shapes(count: int, seed: int = 0, size: int = 32, chunk: int = 1024) -> ShapesDataset:
    """`count` examples, deterministic from `seed`: attributes uniform and independent, small jitter."""
    gen = torch.Generator().manual_seed(seed)
    attributes = {name: torch.randint(len(values), (count,), generator=gen) for name, values in ATTRIBUTES.items()}
    offsets = (torch.rand(count, 3, generator=gen) * 2 - 1) * JITTER
    offsets[:, 2] *= 3  # size jitter is relative: +-9 %
    images = torch.cat([render({k: v[i:i + chunk] for k, v in attributes.items()}, size, offsets=offsets[i:i + chunk])
                        for i in range(0, count, chunk)]) if count else torch.zeros(0, 3, size, size)
    names = [ATTRIBUTES[k] for k in ATTRIBUTES]
    captions = tuple(caption(*(names[j][int(attributes[k][i])] for j, k in enumerate(ATTRIBUTES)))
                     for i in range(count))
    return ShapesDataset(images * 2 - 1, captions=captions, name=f"shapes_{size}_seed{seed}", attributes=attributes)


@node("core/shapes_dataset", category="data", display_name="Captioned shapes dataset")
def shapes_dataset(ctx: Context, count: Annotated[int, Field(ge=1, le=1_000_000)] = 4096,
                   seed: Seed = 0, size: Annotated[int, Field(ge=8, le=256)] = 32) -> DATASET:
    """Procedural captioned shapes ("a small red circle at the top left on a white background").

    Images (N, 3, size, size) in [-1, 1], captions, and the attribute indices (shape, colour, size,
    position, background) per example; the same seed gives the same dataset.
    """
    return make_shapes(count, seed, size).to(ctx.device)


@node("core/dataset_images", category="data", display_name="Dataset images")
def dataset_images(ctx: Context, dataset: DATASET, start: Annotated[int, Field(ge=0)] = 0,
                   count: Annotated[int, Field(ge=1, le=4096)] = 16) -> IMAGE:
    """Examples [start, start + count) of a dataset as images in [0, 1] (pixels mapped from [-1, 1])."""
    images = dataset.images[start:start + count]
    return ((images + 1) / 2).clamp(0, 1).to(ctx.device)


def measure_shapes(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Read the attributes back from images (B, 3, H, W) in [0, 1], as indices into `ATTRIBUTES`.

    background: nearest background colour to the median border pixel. Foreground weight w = colour
    distance to the background / distance of the nearest shape colour, clipped to [0, 1]. colour:
    nearest shape colour to the w-weighted mean pixel. position: nearest centre to the centroid of w.
    shape: fill ratio area / bounding-box area (circle pi/4, square 1, triangle 1/2), the box's sides
    being the sums of the row / column maxima of w. size: area against the geometric midpoint of the
    small and large areas of that shape.
    """
    b, _, h, w = images.shape
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2)
    bg_pixel = border.median(dim=2).values
    bgs = torch.tensor(list(BACKGROUNDS.values()))
    fgs = torch.tensor(list(COLOURS.values()))
    background = torch.cdist(bg_pixel, bgs).argmin(1)
    bg = bgs[background][:, :, None, None]
    diff = (images - bg).norm(dim=1)
    # first pass: coverage against the weakest contrast any colour has on this background (saturates early)
    weakest = torch.cdist(bgs[background], fgs).amin(1)
    rough = (diff / weakest[:, None, None]).clamp(0, 1)[:, None]
    mean_fg = (images * rough).sum((2, 3)) / rough.sum((2, 3)).clamp_min(1e-6)
    colour = torch.cdist(mean_fg, fgs).argmin(1)
    contrast = (fgs[colour] - bgs[background]).norm(dim=1)
    weight = (diff / contrast[:, None, None]).clamp(0, 1)
    area = weight.sum((1, 2)) / (h * w)
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    total = weight.sum((1, 2)).clamp_min(1e-6)
    centroid = torch.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], dim=1)
    position = torch.cdist(centroid, torch.tensor(list(POSITIONS.values()))).argmin(1)
    height, width = weight.amax(2).sum(1), weight.amax(1).sum(1)  # soft extents: partial rows count partly
    box = (height * width).clamp_min(1) / (h * w)
    fill = area / box
    shape = torch.cdist(fill[:, None], torch.tensor([[math.pi / 4], [1.0], [0.5]])).argmin(1)
    unit_area = torch.tensor([math.pi, 2.0, 3 * math.sqrt(3) / 4])[shape]  # area / r^2 of circle, square, triangle
    radii = torch.tensor(list(SIZES.values()))
    threshold = unit_area * (radii[0] * radii[1])  # geometric midpoint of the two areas
    size = (area > threshold).long()
    return {"shape": shape, "colour": colour, "size": size, "position": position, "background": background}
