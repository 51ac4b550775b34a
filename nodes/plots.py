"""Draw 2-D samples, solver trajectories and densities into an IMAGE with pillow (no matplotlib)."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from PIL import Image, ImageDraw
from pydantic import Field

from nodegraph import node

from .sockets import IMAGE, TENSOR

BACKGROUND = (255, 255, 255)
REFERENCE = (200, 200, 200)
START = (66, 133, 244)
END = (219, 68, 55)
PATHS = (120, 144, 156)
# A short perceptual ramp (dark blue -> teal -> yellow) for density images.
RAMP = ((255, 255, 255), (68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))


def _as_trajectory(points: torch.Tensor) -> torch.Tensor:
    """(N, 2) -> (1, N, 2); (T, N, 2) stays; anything else is an error."""
    points = points.detach().to("cpu", torch.float64)
    if points.dim() == 2 and points.shape[1] == 2:
        return points[None]
    if points.dim() == 3 and points.shape[2] == 2:
        return points
    raise ValueError(f"expected 2-D points (N, 2) or a trajectory (T, N, 2), got shape {tuple(points.shape)}")


class Canvas:
    """Maps data coordinates in [-extent, extent]^2 to a size x size pixel image (y up)."""

    def __init__(self, size: int, extent: float) -> None:
        self.size = size
        self.extent = extent
        self.image = Image.new("RGB", (size, size), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def pixels(self, points: torch.Tensor) -> list[tuple[float, float]]:
        scale = (self.size - 1) / (2 * self.extent)
        px = (points[:, 0] + self.extent) * scale
        py = (self.extent - points[:, 1]) * scale
        return list(zip(px.tolist(), py.tolist(), strict=True))

    def dots(self, points: torch.Tensor, color: tuple[int, int, int], radius: float) -> None:
        for x, y in self.pixels(points):
            self.draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=color)

    def lines(self, trajectory: torch.Tensor, color: tuple[int, int, int]) -> None:
        for n in range(trajectory.shape[1]):
            self.draw.line(self.pixels(trajectory[:, n]), fill=color, width=1)

    def axes(self) -> None:
        middle = (self.size - 1) / 2
        self.draw.line((0, middle, self.size, middle), fill=(235, 235, 235))
        self.draw.line((middle, 0, middle, self.size), fill=(235, 235, 235))

    def to_tensor(self) -> torch.Tensor:
        data = torch.frombuffer(bytearray(self.image.tobytes()), dtype=torch.uint8)
        return data.reshape(self.size, self.size, 3).permute(2, 0, 1)[None].float() / 255


def density_image(points: torch.Tensor, size: int, extent: float, bins: int) -> torch.Tensor:
    """2-D histogram of the points on [-extent, extent]^2, sqrt-scaled and coloured with RAMP, (1, 3, H, W)."""
    counts = torch.histogramdd(points.to(torch.float64), bins=[bins, bins],
                               range=[-extent, extent, -extent, extent]).hist
    level = (counts / counts.max().clamp_min(1)).sqrt().T.flip(0)  # rows = y, top = +extent
    ramp = torch.tensor(RAMP, dtype=torch.float64) / 255
    position = level * (len(RAMP) - 1)
    low = position.floor().long().clamp(max=len(RAMP) - 2)
    frac = (position - low)[..., None]
    colors = ramp[low] * (1 - frac) + ramp[low + 1] * frac
    image = colors.permute(2, 0, 1)[None].float()
    return torch.nn.functional.interpolate(image, size=(size, size), mode="nearest")


@node("core/plot_2d", category="image", display_name="Plot 2-D points", output_node=True)
def plot_2d(points: TENSOR, reference: TENSOR = None,
            mode: Literal["scatter", "trajectories", "density"] = "trajectories",
            size: Annotated[int, Field(ge=64, le=2048)] = 512,
            extent: Annotated[float, Field(ge=0, le=1000)] = 0.0,
            max_paths: Annotated[int, Field(ge=0, le=10000)] = 300,
            bins: Annotated[int, Field(ge=4, le=1024)] = 96) -> IMAGE:
    """Draw 2-D points (N, 2) or a solver trajectory (T, N, 2): scatter of the final points, paths from
    start (blue) to end (red), or the density (histogram) of the final points. `reference` points
    (e.g. true data) are drawn in grey underneath. extent 0: fit the view to the data."""
    trajectory = _as_trajectory(points)
    ref = _as_trajectory(reference)[-1] if reference is not None else None
    if extent == 0:
        everything = trajectory.reshape(-1, 2) if ref is None else torch.cat([trajectory.reshape(-1, 2), ref])
        finite = everything[torch.isfinite(everything).all(dim=1)]
        extent = 1.1 * float(finite.abs().max()) if finite.numel() else 1.0
        extent = max(extent, 1e-6)
    final = trajectory[-1]
    if mode == "density":
        return density_image(final, size, extent, bins)
    canvas = Canvas(size, extent)
    canvas.axes()
    radius = max(1.0, size / 400)
    if ref is not None:
        canvas.dots(ref, REFERENCE, radius)
    if mode == "trajectories" and trajectory.shape[0] > 1:
        shown = trajectory[:, :max_paths]
        canvas.lines(shown, PATHS)
        canvas.dots(shown[0], START, radius)
    canvas.dots(final, END, radius)
    return canvas.to_tensor()
