"""Saved PNGs carry their exact workflow; `nodegraph run image.png` runs it again."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from nodegraph import Workflow, WorkflowFormatError
from nodegraph.cli import main as cli_main
from nodegraph.png_workflow import KEYWORD, PngWorkflowError, workflow_text

from .job_nodes import saving


@pytest.fixture()
def folder(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Path("w.json").write_text(json.dumps(saving(seed=1, prefix="shot")))
    return tmp_path


def test_a_saved_png_holds_the_workflow_with_the_values_used_and_runs_again(folder, capsys):
    assert cli_main(["run", "w.json", "--set", "noise.seed=7", "--out", "out"]) == 0
    first = sorted(Path("out").glob("shot_*.png"))
    assert len(first) == 2  # a batch of two images, each with the workflow
    with Image.open(first[0]) as image:  # any PNG reader sees the chunk
        embedded = json.loads(image.text[KEYWORD])
    assert embedded["nodes"]["noise"]["inputs"]["seed"] == 7  # the override, not the file's 1
    assert Workflow.load(first[0]).to_json() == Workflow.from_dict(embedded).to_json()

    assert cli_main(["run", str(first[0]), "--out", "again"]) == 0
    second = sorted(Path("again").glob("shot_*.png"))
    assert len(second) == 2
    for a, b in zip(first, second, strict=True):
        with Image.open(a) as x, Image.open(b) as y:
            assert x.tobytes() == y.tobytes()  # the same workflow, the same pixels


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with(*chunks: bytes) -> bytes:
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    pixels = chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    return b"\x89PNG\r\n\x1a\n" + header + b"".join(chunks) + pixels + chunk(b"IEND", b"")


def test_text_chunk_kinds_and_limits():
    text = json.dumps(saving(3))
    plain = chunk(b"tEXt", KEYWORD.encode() + b"\x00" + text.encode())
    assert workflow_text(png_with(plain), 1 << 20) == text
    packed = chunk(b"zTXt", KEYWORD.encode() + b"\x00\x00" + zlib.compress(text.encode()))
    assert workflow_text(png_with(chunk(b"tEXt", b"Other\x00x"), packed), 1 << 20) == text
    bomb = chunk(b"iTXt", KEYWORD.encode() + b"\x00\x01\x00\x00\x00" + zlib.compress(b" " * (4 << 20)))
    with pytest.raises(PngWorkflowError, match="larger than the limit of 65536 bytes"):
        workflow_text(png_with(bomb), 1 << 16)
    with pytest.raises(PngWorkflowError, match="damaged"):
        workflow_text(png_with(chunk(b"zTXt", KEYWORD.encode() + b"\x00\x00" + b"not zlib")), 1 << 20)


def test_a_png_without_a_workflow_is_one_clear_error(folder, capsys):
    Image.new("RGB", (4, 4)).save("plain.png")
    with pytest.raises(WorkflowFormatError, match="holds no nodegraph workflow"):
        Workflow.load("plain.png")
    assert cli_main(["run", "plain.png"]) == 2
    assert "holds no nodegraph workflow" in capsys.readouterr().err
