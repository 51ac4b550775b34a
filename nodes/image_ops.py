"""Image operations for editing: resize, pad (outpainting canvas + its mask), masks from images, and
images as the sample space of pixel models."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import Field

from nodegraph import node

from .annotations import Unit
from .sockets import IMAGE, LATENT, MASK

Side = Annotated[int, Field(ge=1, le=8192)]
Margin = Annotated[int, Field(ge=0, le=4096)]


def _batch(images: torch.Tensor) -> torch.Tensor:
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise ValueError(f"expected images shaped (B, C, H, W), got {tuple(images.shape)}")
    return images


@node("core/resize_image", category="image", display_name="Resize image")
def resize_image(images: IMAGE, width: Side = 32, height: Side = 32,
                 mode: Literal["bilinear", "bicubic", "nearest", "area"] = "bilinear") -> IMAGE:
    """Resample images to width x height pixels (bilinear and bicubic antialiased when shrinking; bicubic
    clamped to [0, 1]). Fit your own image to the model: 32x32 for the shapes model, multiples of 8 for SD."""
    images = _batch(images).float()
    if mode in ("bilinear", "bicubic"):
        out = F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=True)
    else:
        out = F.interpolate(images, size=(height, width), mode=mode)
    return out.clamp(0, 1)


class Padded(NamedTuple):
    image: IMAGE
    mask: MASK


@node("core/pad_image", category="image", display_name="Pad image (outpainting canvas)")
def pad_image(images: IMAGE, left: Margin = 0, right: Margin = 0, top: Margin = 0, bottom: Margin = 0,
              fill: Literal["constant", "edge", "reflect"] = "edge", value: Unit = 0.5) -> Padded:
    """Grow the canvas by the given margins (pixels) and return the mask of the new area (1 = paint there,
    0 = the original): outpainting is inpainting of that mask. The new pixels are `value` (constant),
    the nearest border pixel (edge) or the mirrored image (reflect); the solver repaints them anyway,
    but the fill is what the encoder sees. Latent models need the padded size to stay a multiple of
    their downscale (4 for the shapes VAE, 8 for SD)."""
    images = _batch(images).float()
    batch, _, height, width = images.shape
    pads = (left, right, top, bottom)
    if fill == "constant":
        grown = F.pad(images, pads, mode="constant", value=value)
    else:
        if fill == "reflect" and (max(left, right) >= width or max(top, bottom) >= height):
            raise ValueError(f"reflect padding must be smaller than the image ({width}x{height}); use edge")
        grown = F.pad(images, pads, mode="replicate" if fill == "edge" else "reflect")
    mask = torch.ones(1, 1, height + top + bottom, width + left + right, device=images.device)
    mask[..., top:top + height, left:left + width] = 0
    return Padded(grown, mask)


@node("core/image_to_mask", category="image", display_name="Image to mask")
def image_to_mask(images: IMAGE, channel: Literal["luminance", "alpha", "red", "green", "blue"] = "luminance",
                  invert: bool = False, threshold: Unit = 0.0) -> MASK:
    """A MASK (1 = repaint) from an image: its luminance 0.299 R + 0.587 G + 0.114 B (grey images as they
    are), its alpha or one colour channel; `invert` swaps repaint and keep; threshold > 0 makes it
    binary (1 where the value >= threshold), 0 keeps it soft."""
    images = _batch(images).float()
    channels = images.shape[1]
    if channel == "alpha":
        if channels not in (2, 4):
            raise ValueError(f"the image has {channels} channels and no alpha")
        mask = images[:, -1:]
    elif channel == "luminance":
        if channels >= 3:
            weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
            mask = (images[:, :3] * weights).sum(dim=1, keepdim=True)
        else:
            mask = images[:, :1]
    else:
        if channels < 3:
            raise ValueError(f"channel {channel!r} needs a colour image, this one has {channels} channel(s)")
        index = ("red", "green", "blue").index(channel)
        mask = images[:, index:index + 1]
    if invert:
        mask = 1 - mask
    if threshold > 0:
        mask = (mask >= threshold).float()
    return mask.clamp(0, 1)


@node("core/image_to_pixels", category="image", display_name="Image to pixel latents")
def image_to_pixels(images: IMAGE, channels: Literal["keep", "grey", "rgb"] = "keep") -> LATENT:
    """Pixel models (the digits model) sample images directly, in [-1, 1]: x = 2 image - 1 (the inverse of
    core/to_image symmetric). grey: luminance as one channel; rgb: three channels (grey repeated, alpha
    dropped). The pixel-model counterpart of core/vae_encode."""
    images = _batch(images).float()
    if channels == "grey" and images.shape[1] >= 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
        images = (images[:, :3] * weights).sum(dim=1, keepdim=True)
    elif channels == "grey":
        images = images[:, :1]
    elif channels == "rgb":
        images = images[:, :3] if images.shape[1] >= 3 else images[:, :1].expand(-1, 3, -1, -1)
    return images * 2 - 1
