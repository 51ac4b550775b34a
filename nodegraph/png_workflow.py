"""Workflows inside PNG files: the exact workflow a saved image came from, in a text chunk.

`core/save_image` writes the run's workflow (with every override applied: the values used) as an
iTXt chunk with the keyword `KEYWORD`, compressed. `Workflow.load` / `from_json` accept such a PNG
in place of a JSON file, so `nodegraph run image.png` runs it again and the editor opens it.

Reading parses the chunk list itself (8-byte signature, then length, type, data, CRC per chunk) and
never decodes pixels; a compressed chunk is inflated with an output limit, so a small file cannot
expand into gigabytes.
"""

from __future__ import annotations

import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYWORD = "nodegraph-workflow"


class PngWorkflowError(ValueError):
    """A PNG without a nodegraph workflow, or a damaged one."""


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_SIGNATURE


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as err:
        raise PngWorkflowError(f"the workflow chunk is damaged ({err})") from None
    if len(out) > limit:
        raise PngWorkflowError(f"the workflow in this PNG is larger than the limit of {limit} bytes")
    return out


def _text_of(kind: bytes, data: bytes, limit: int) -> tuple[str, str] | None:
    """(keyword, text) of a tEXt / zTXt / iTXt chunk (PNG spec 11.3.4), None for chunks of other kinds."""
    keyword, sep, rest = data.partition(b"\x00")
    if not sep:
        return None
    name = keyword.decode("latin-1")
    if kind == b"tEXt":
        return name, rest.decode("latin-1")
    if kind == b"zTXt":  # compression method byte, then zlib data
        return name, _inflate(rest[1:], limit).decode("latin-1")
    if kind == b"iTXt":  # compressed flag, method, language tag \0, translated keyword \0, text (UTF-8)
        if len(rest) < 2:
            return None
        compressed, body = rest[0], rest[2:]
        _language, _, body = body.partition(b"\x00")
        _translated, _, body = body.partition(b"\x00")
        raw = _inflate(body, limit) if compressed else body
        try:
            return name, raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PngWorkflowError("the workflow chunk is not UTF-8 text") from None
    return None


def workflow_text(data: bytes, limit: int) -> str:
    """The workflow JSON stored in PNG bytes `data` (at most `limit` bytes once inflated)."""
    if not is_png(data):
        raise PngWorkflowError("not a PNG file")
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        if len(body) < length:
            break  # truncated: no more complete chunks
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            found = _text_of(kind, body, limit)
            if found is not None and found[0] == KEYWORD:
                return found[1]
        if kind == b"IEND":
            break
        position += 12 + length
    raise PngWorkflowError("this PNG holds no nodegraph workflow (images saved by core/save_image do)")
