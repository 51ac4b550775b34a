"""The editor's inputs folder: images the user uploads and masks painted in the browser.

An upload is data only: at most `MAX_INPUT_BYTES`, decoded by Pillow as a PNG, JPEG or WebP of at most
`MAX_PIXELS`, and stored re-encoded as PNG (never the posted bytes) under a content-addressed name
`<stem>_<sha256 prefix>.png` in the one inputs folder, so uploads cannot overwrite each other or land
anywhere else. Masks are stored as grey PNGs (white = repaint). Workflows reference the stored file by
path, so they run headless from the same working folder.

Showing an image to the editor reads only what a workflow run could read: the path must pass the
session's read confinement, and the answer is the decoded image re-encoded as PNG.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Literal

from PIL import Image

from nodegraph import PathPolicy, PathRefused, atomic_write_bytes

MAX_INPUT_BYTES = 2 * 1024 * 1024
"""Largest uploaded image or mask (the editor's API body limit)."""
MAX_PIXELS = 4096 * 4096
"""Largest image (width x height) accepted or shown; checked from the header, before decoding."""
FORMATS = ("PNG", "JPEG", "WEBP")

_STEM = re.compile(r"[^A-Za-z0-9_-]+")


class InputRefused(ValueError):
    """An upload or an image request that is not accepted (the message says why)."""


def decode_image(data: bytes) -> Image.Image:
    """The image in `data`, fully decoded, if it is a PNG, JPEG or WebP within the size bounds."""
    if len(data) > MAX_INPUT_BYTES:
        raise InputRefused(f"the image is larger than {MAX_INPUT_BYTES} bytes")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in FORMATS:
            raise InputRefused(f"expected a PNG, JPEG or WebP image, got {image.format or 'an unknown format'}")
        check_pixels(image)
        image.load()
    except InputRefused:
        raise
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds on bad data
        raise InputRefused(f"not a readable image: {err}") from None
    return image


def check_pixels(image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise InputRefused(f"the image is {width}x{height}; at most {MAX_PIXELS} pixels are accepted")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def store_input(folder: Path, data: bytes, kind: Literal["image", "mask"], name: str = "") -> Path:
    """Decode `data`, re-encode it as PNG (grey "L" for a mask, RGB or RGBA for an image) and store it in
    `folder` under `<stem>_<hash>.png`; the same content always gets the same file. Returns the file."""
    image = decode_image(data)
    if kind == "mask":
        image = image.convert("L")
    elif image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    encoded = png_bytes(image)
    stem = _STEM.sub("_", Path(name).stem)[:40].strip("_") or kind
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{stem}_{hashlib.sha256(encoded).hexdigest()[:16]}.png"
    if not target.is_file():
        try:
            atomic_write_bytes(target, encoded, overwrite=False)
        except FileExistsError:  # a concurrent upload of the same content
            pass
    return target


def workflow_path(file: Path) -> str:
    """How a workflow names `file`: relative to the working folder when inside it (portable), else absolute."""
    resolved, cwd = file.resolve(), Path.cwd().resolve()
    return resolved.relative_to(cwd).as_posix() if resolved.is_relative_to(cwd) else str(resolved)


def read_image_png(policy: PathPolicy, value: str) -> bytes:
    """The image a workflow would read at `value`, as PNG bytes; InputRefused if the path is not readable
    under `policy` (outside the read roots) or is not an image within the bounds."""
    try:
        file = policy.check_read(value)
    except PathRefused as err:
        raise InputRefused(str(err)) from None
    if not file.is_file():
        raise InputRefused(f"no file at {value!r}")
    if file.stat().st_size > 64 * MAX_INPUT_BYTES:
        raise InputRefused(f"{value!r} is too large to show")
    try:
        with Image.open(file) as image:
            if image.format not in FORMATS:
                raise InputRefused(f"{value!r} is not a PNG, JPEG or WebP image")
            check_pixels(image)
            image.load()
            shown = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
            return png_bytes(shown)
    except InputRefused:
        raise
    except Exception as err:  # noqa: BLE001
        raise InputRefused(f"{value!r} is not a readable image: {err}") from None
