"""Tensor utilities: random tensors, normalisation to images, batch concatenation."""

from typing import Annotated, Literal

import torch
from pydantic import Field

from nodegraph import Context, node

from .annotations import Seed
from .sockets import IMAGE, TENSOR


@node("core/random_tensor", category="tensor", display_name="Random tensor")
def random_tensor(ctx: Context, shape: list[Annotated[int, Field(ge=1, le=65536)]] = [1, 3, 64, 64],  # noqa: B006
                  seed: Seed = 0,
                  distribution: Literal["normal", "uniform"] = "normal") -> TENSOR:
    """A tensor of Gaussian (or uniform [0, 1)) noise, reproducible from `seed` on the run's device."""
    numel = 1
    for size in shape:
        numel *= size
    if numel > 1 << 28:
        raise ValueError(f"shape {shape} has {numel} elements; the limit is {1 << 28}")
    generator = ctx.generator(seed)
    draw = torch.randn if distribution == "normal" else torch.rand
    return draw(*shape, generator=generator, device=ctx.device)


@node("core/to_image", category="tensor", display_name="Tensor to image")
def to_image(tensor: TENSOR, mode: Literal["minmax", "symmetric", "clamp"] = "symmetric") -> IMAGE:
    """Map a (B, C, H, W) tensor to [0, 1]: from [-1, 1] (symmetric), by its range (minmax) or clamping."""
    if tensor.dim() != 4:
        raise ValueError(f"expected (B, C, H, W), got shape {tuple(tensor.shape)}")
    if mode == "symmetric":
        return ((tensor + 1) / 2).clamp(0, 1)
    if mode == "clamp":
        return tensor.clamp(0, 1)
    low = tensor.amin(dim=(1, 2, 3), keepdim=True)
    high = tensor.amax(dim=(1, 2, 3), keepdim=True)
    return (tensor - low) / (high - low).clamp_min(1e-12)


@node("core/smooth", category="tensor", display_name="Smooth")
def smooth(tensor: TENSOR, passes: Annotated[int, Field(ge=0, le=64)] = 4) -> TENSOR:
    """Repeated 3x3 box blur of a (B, C, H, W) tensor: turns white noise into soft clouds."""
    channels = tensor.shape[1]
    kernel = torch.full((channels, 1, 3, 3), 1 / 9, device=tensor.device, dtype=tensor.dtype)
    for _ in range(passes):
        tensor = torch.nn.functional.conv2d(torch.nn.functional.pad(tensor, (1, 1, 1, 1), mode="reflect"),
                                            kernel, groups=channels)
    return tensor


@node("core/concat", category="tensor", display_name="Concatenate batch")
def concat(first: TENSOR, second: TENSOR) -> TENSOR:
    """Join two batches along the batch dimension (shapes must agree otherwise)."""
    return torch.cat([first, second.to(first.device)], dim=0)
