import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image

from nodegraph import Context
from nodegraph.confine import output_target
from nodes.image_io import (
    image_grid,
    pil_to_tensor,
    save_image,
    save_png_numbered,
    tensor_to_pil,
)

ROOT = Path(__file__).resolve().parent.parent


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
    assert output_target(tmp_path, "sub/dir") == (tmp_path / "sub/dir").resolve()
    for bad in ("../x", "/etc", "a/../../b"):
        with pytest.raises(ValueError, match="outside the output folder|absolute"):
            output_target(tmp_path, bad)


def test_grid_layout():
    images = torch.zeros(5, 3, 2, 2)
    images[4] = 1
    grid = image_grid(images, columns=2, padding=1, pad_value=0.5)
    assert grid.shape == (1, 3, 3 * 3 + 1, 2 * 3 + 1)
    assert grid[0, 0, 7, 1] == 1 and grid[0, 0, 0, 0] == 0.5


KILL_WRITER = """
import builtins, io, os, sys, torch
from pathlib import Path
from nodes.image_io import save_png_numbered, tensor_to_pil

folder = Path(sys.argv[1]).resolve()
image = tensor_to_pil(torch.rand(1, 3, 256, 256))[0]
save_png_numbered(image, folder, "big")


class HalfThenHold:
    # A file opened for writing: its first large write stops halfway, says so, and waits to be killed.
    def __init__(self, handle):
        self._handle = handle

    def write(self, data):
        if len(data) > 1024:
            self._handle.write(data[: len(data) // 2])
            self._handle.flush()
            print("mid-write", flush=True)
            sys.stdin.readline()
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def holding(opener):
    def open_file(file, mode="r", *args, **kwargs):
        handle = opener(file, mode, *args, **kwargs)
        return HalfThenHold(handle) if any(c in mode for c in "wax+") else handle
    return open_file


builtins.open, io.open, os.fdopen = holding(builtins.open), holding(io.open), holding(os.fdopen)
save_png_numbered(image, folder, "big")
print("finished", flush=True)
"""


def test_killing_a_writer_never_leaves_a_partial_png(tmp_path):
    """The writer is killed halfway through writing the second PNG's bytes: no partial PNG under a final name."""
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert line.startswith("mid-write"), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name for p in tmp_path.glob("*.png")] == ["big_00001.png"]  # only the one that was finished
    with Image.open(tmp_path / "big_00001.png") as image:
        image.load()  # raises on a truncated file
        assert image.size == (256, 256)


def id_images(ids: list[int]) -> torch.Tensor:
    """One small image per id, every pixel = id / 255, so a file's content says which save wrote it."""
    return torch.tensor(ids, dtype=torch.float32).div(255).view(-1, 1, 1, 1).expand(-1, 3, 6, 5).clone()


def id_of(path: str) -> int:
    with Image.open(path) as image:
        colours = image.convert("RGB").getcolors()
    assert len(colours) == 1, f"{path} mixes contents"
    return colours[0][1][0]


def save_ids(output_dir: Path, ids: list[int]) -> list[str]:
    ctx = Context("save", "core/save_image", output_dir=str(output_dir))
    return save_image(ctx, id_images(ids), folder="shots", prefix="race")


def check_no_clobbering(folder: Path, written: dict[str, int], expected_count: int) -> None:
    assert len(written) == expected_count  # every save got its own name
    assert sorted(p.name for p in folder.glob("race_*.png")) == sorted(Path(p).name for p in written)
    for path, image_id in written.items():
        assert id_of(path) == image_id  # nobody overwrote it
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".png")] == []  # no temp files left


def test_concurrent_saves_from_threads_never_clobber(tmp_path):
    threads, per_thread = 6, 10
    barrier = threading.Barrier(threads)
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        ids = [index * per_thread + j + 1 for j in range(per_thread)]
        barrier.wait()
        try:
            paths = []
            for image_id in ids:  # several saves each, so the threads interleave
                paths += save_ids(tmp_path, [image_id])
            results[index] = paths
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over often, so the threads interleave inside each save
    try:
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors
    written = {path: index * per_thread + j + 1 for index, paths in results.items() for j, path in enumerate(paths)}
    check_no_clobbering(tmp_path / "shots", written, threads * per_thread)


SAVER = """
import json, sys
from pathlib import Path
from tests.test_image_io import save_ids

first = int(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()  # every process starts saving at the same moment
paths = [save_ids(Path(sys.argv[1]), [first + i, first + i + 1]) for i in range(0, 60, 2)]
print(json.dumps([p for batch in paths for p in batch]), flush=True)
"""


def test_concurrent_saves_from_two_processes_never_clobber(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path), str(first)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for first in (1, 101)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=120)
    written = {path: first + i for first, paths in zip((1, 101), outputs, strict=True) for i, path in enumerate(paths)}
    check_no_clobbering(tmp_path / "shots", written, 120)


def test_load_image_reads_a_png_through_the_engine(builtin_registry, tmp_path):
    from nodegraph import Session

    from .helpers import wf

    pixels = torch.randint(0, 256, (1, 3, 7, 9)).float() / 255
    tensor_to_pil(pixels)[0].save(tmp_path / "in.png")
    grey = torch.randint(0, 256, (1, 1, 4, 4)).float() / 255
    tensor_to_pil(grey)[0].save(tmp_path / "grey.png")
    session = Session(builtin_registry, device="cpu", read_roots=[tmp_path])
    w = wf({"load": {"type": "core/load_image", "inputs": {"path": str(tmp_path / "in.png")}}})
    loaded = session.run(w, outputs=["load"]).value("load")
    assert loaded.shape == (1, 3, 7, 9) and loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, pixels, atol=1e-6, rtol=0)
    w.set("load.path", str(tmp_path / "grey.png"))
    torch.testing.assert_close(session.run(w, outputs=["load"]).value("load"), grey, atol=1e-6, rtol=0)
    w.set("load.path", str(tmp_path / "absent.png"))
    with pytest.raises(Exception, match="no image file"):
        session.run(w, outputs=["load"])
