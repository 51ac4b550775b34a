import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from nodes.image_io import image_grid, pil_to_tensor, resolve_output_folder, save_png_numbered, tensor_to_pil


def test_tensor_pil_round_trip_is_exact_on_8_bit_values():
    images = torch.randint(0, 256, (2, 3, 5, 7)).float() / 255
    back = torch.cat([pil_to_tensor(img) for img in tensor_to_pil(images)])
    assert torch.allclose(back, images, atol=1e-6)


def test_numbered_names_never_overwrite(tmp_path):
    image = Image.new("RGB", (4, 4), "red")
    paths = [save_png_numbered(image, tmp_path, "img") for _ in range(3)]
    assert [p.name for p in paths] == ["img_00001.png", "img_00002.png", "img_00003.png"]
    (tmp_path / "img_00007.png").write_bytes(b"not ours")
    assert save_png_numbered(image, tmp_path, "img").name == "img_00008.png"
    assert (tmp_path / "img_00007.png").read_bytes() == b"not ours"
    assert not list(tmp_path.glob(".*tmp"))


def test_output_folder_cannot_escape(tmp_path):
    assert resolve_output_folder(tmp_path, "sub/dir") == (tmp_path / "sub/dir").resolve()
    for bad in ("../x", "/etc", "a/../../b"):
        with pytest.raises(ValueError, match="escapes"):
            resolve_output_folder(tmp_path, bad)


def test_grid_layout():
    images = torch.zeros(5, 3, 2, 2)
    images[4] = 1
    grid = image_grid(images, columns=2, padding=1, pad_value=0.5)
    assert grid.shape == (1, 3, 3 * 3 + 1, 2 * 3 + 1)
    assert grid[0, 0, 7, 1] == 1 and grid[0, 0, 0, 0] == 0.5


def test_killing_a_writer_never_leaves_a_partial_png(tmp_path):
    writer = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from nodes.image_io import save_png_numbered, tensor_to_pil\n"
        "image = tensor_to_pil(torch.rand(1, 3, 1024, 1024))[0]\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        "    save_png_numbered(image, Path(sys.argv[1]), 'big')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    pngs = list(tmp_path.glob("*.png"))
    assert pngs, "the writer should have finished at least one image"
    for png in pngs:
        with Image.open(png) as image:
            image.load()  # raises on a truncated file
            assert image.size == (1024, 1024)
