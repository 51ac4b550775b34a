"""VAE nodes: load a VAE checkpoint (shipped or a file), encode images to latents, decode back."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from nodegraph import BatchAxis, Bundled, Context, InputPath, node

from ..sockets import IMAGE, LATENT, VAE
from .base import execution_device
from .checkpoint import WEIGHTS_DIR, load_model

BUNDLED = {"shapes": WEIGHTS_DIR / "shapes_vae.safetensors"}
"""Names of the VAEs shipped with the project and their files."""


def resolve_vae_file(name: str) -> Path:
    """A bundled name ("shapes") or a path to a .safetensors file."""
    path = BUNDLED.get(name) or Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no VAE weights at {path} (bundled names: {sorted(BUNDLED)})")
    return path


@node("core/vae_loader", category="models", display_name="Load VAE")
def vae_loader(ctx: Context, weights: Annotated[InputPath, Bundled(BUNDLED.get)] = "shapes") -> VAE:
    """Load a VAE checkpoint: "shapes" (shipped, 32x32 RGB <-> 4x8x8) or a .safetensors file path."""
    return load_model(resolve_vae_file(weights), ctx.device, kind="vae")


@node("core/vae_encode", category="models", display_name="VAE encode")
def vae_encode(vae: VAE, images: IMAGE) -> LATENT:
    """Images in [0, 1] to latents: scaling_factor * mu(2 x - 1), the posterior mean scaled to unit std."""
    return vae.images_to_latents(images.to(execution_device(vae)))


@node("core/vae_decode", category="models", display_name="VAE decode")
def vae_decode(vae: VAE, latents: Annotated[LATENT, BatchAxis(0)]) -> Annotated[IMAGE, BatchAxis(0)]:
    """Latents to images in [0, 1]: (decode(z / scaling_factor) + 1) / 2, clamped. A list of latents is
    decoded as one batch."""
    return vae.latents_to_images(latents.to(execution_device(vae)))
