"""nodegraph.atomic: content round trip, no temp files left, no-overwrite mode, concurrent writers."""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from nodegraph import atomic_path, atomic_write_bytes, atomic_write_text


def test_bytes_round_trip_and_overwrite(tmp_path):
    target = tmp_path / "sub" / "a.bin"
    assert atomic_write_bytes(target, b"first") == target  # missing folders are created
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert atomic_write_text(tmp_path / "t.txt", "h\u00e9") and (tmp_path / "t.txt").read_text("utf-8") == "h\u00e9"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.bin", "sub", "t.txt"]


def test_mode_is_ordinary_and_respects_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "a", b"x")
        atomic_write_bytes(tmp_path / "b", b"x", mode=0o600)
    finally:
        os.umask(previous)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640  # 0o644 & ~0o027, not mkstemp's 0o600
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600


def test_path_writer_that_recreates_the_file_still_gets_ordinary_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "w.safetensors") as temp:
            temp.unlink()  # as writers that create their own file do
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT, 0o600))
    finally:
        os.umask(previous)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644


def test_exception_mid_write_publishes_nothing_and_leaves_no_temp(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temp:
        temp.write_bytes(b"partial")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_path_writer_publishes_on_success(tmp_path):
    with atomic_path(tmp_path / "f.bin") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".f.bin.")
        assert not (tmp_path / "f.bin").exists()  # nothing under the final name until the writer is done
        temp.write_bytes(b"done")
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"] and (tmp_path / "f.bin").read_bytes() == b"done"


def test_no_overwrite_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "keep.png"
    atomic_write_bytes(target, b"original", overwrite=False)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"intruder", overwrite=False)
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_concurrent_no_overwrite_writers_each_get_their_own_file(tmp_path):
    """16 threads race for the names n0, n1, ...; each claims a distinct name and no content is lost."""
    start = threading.Barrier(16)

    def claim(writer: int) -> str:
        start.wait()
        number = 0
        while True:
            try:
                return atomic_write_bytes(tmp_path / f"n{number}", str(writer).encode(), overwrite=False).name
            except FileExistsError:
                number += 1

    with ThreadPoolExecutor(16) as pool:
        names = list(pool.map(claim, range(16)))
    assert sorted(names) == sorted(f"n{i}" for i in range(16))
    contents = sorted(int((tmp_path / name).read_bytes()) for name in names)
    assert contents == list(range(16))
    assert len(list(tmp_path.iterdir())) == 16


def test_durable_writes_fsync_the_file_and_its_folder_and_others_do_not(tmp_path, monkeypatch):
    from nodegraph import atomic

    synced = []
    monkeypatch.setattr(atomic, "_fsync", lambda path, flags: synced.append(path))
    with atomic_path(tmp_path / "durable.bin") as temp:
        temp.write_bytes(b"1")
    assert len(synced) == 2 and synced[1] == tmp_path
    synced.clear()
    with atomic_path(tmp_path / "cache.bin", durable=False) as temp:
        temp.write_bytes(b"2")
    assert synced == [] and (tmp_path / "cache.bin").read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.bin", "durable.bin"]  # no temporary left
