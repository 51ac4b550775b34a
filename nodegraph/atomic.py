"""Atomic file writes: readers see the old file or the complete new one, never a partial file.

Every write goes to a temporary file in the target's folder (same file system, so the final step is
a rename, not a copy), is flushed and fsynced, then published under the final name:

* overwrite=True: `os.replace`, which atomically swaps the name to the new file;
* overwrite=False: `os.link`, which fails with FileExistsError if the name exists, so an existing
  file is never replaced and two concurrent writers can never clobber each other.

A writer killed mid-write leaves at most a hidden `.NAME.<12 hex>.tmp` file, never a partial final
file; `remove_stale_temps` deletes such leftovers (only names of exactly that pattern, only files
older than this process and than `STALE_SECONDS`, so a write in progress elsewhere is never touched).
It runs at the first save into a folder in each process and when a Session starts.
The temporary file is created with `mode` through `os.open`, so the process umask applies as it
does for any ordinary file (0o644 under the usual umask 022; `tempfile.mkstemp` would give 0600).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_stale_temps"]

TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")
"""Names `_create_temp` makes, and the only names `remove_stale_temps` ever deletes."""

STALE_SECONDS = 60.0
PROCESS_START = time.time()
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in `folder` (not below it); returns them.

    A file is a leftover when its name matches `TEMP_NAME` and it was last modified before this
    process started and more than `STALE_SECONDS` ago: no writer of this process made it, and none
    elsewhere is still writing it. Anything else (other hidden files, folders, links) is left alone.
    """
    removed = []
    cutoff = min(PROCESS_START, time.time() - STALE_SECONDS)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if (TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)
                    and entry.stat(follow_symlinks=False).st_mtime < cutoff):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _sweep_once(folder: Path) -> None:
    """`remove_stale_temps` at the first save into `folder` in this process."""
    key = folder.resolve()
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale_temps(key)


def _create_temp(target: Path, mode: int) -> Path:
    """An exclusive new hidden empty file beside `target` (random suffix; retried on the rare name clash)."""
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            return temp
        except FileExistsError:
            continue


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(temp: Path, target: Path, overwrite: bool, durable: bool = True) -> None:
    """Give the fsynced temp file its final name, then fsync the folder so the name survives a crash."""
    if overwrite:
        os.replace(temp, target)
    else:
        os.link(temp, target)  # FileExistsError when the name is taken
    if durable:
        _fsync(target.parent, os.O_RDONLY)


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, mode: int = 0o644,
                durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write (for writers that need a file name, e.g. safetensors).

    On normal exit the file is fsynced and published as `path` (see the module docstring); on an
    exception, or when publishing fails, the temporary file is removed and nothing is published.
    `durable=False` skips both fsyncs: readers still see the old file or the complete new one while
    the system runs, but after a power loss the new name may hold an empty or partial file. Only for
    files whose readers detect that (the disk cache's entries carry checksums).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    temp = _create_temp(target, mode)
    permissions = temp.stat().st_mode & 0o7777  # `mode` less the umask, as os.open applied it
    try:
        yield temp
        os.chmod(temp, permissions)  # a writer may have replaced the file (safetensors writes it as 0600)
        if durable:
            _fsync(temp, os.O_RDONLY)
        _publish(temp, target, overwrite, durable)
    finally:
        temp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True,
                       mode: int = 0o644) -> Path:
    """Write `data` to `path` atomically; with overwrite=False raise FileExistsError if `path` exists."""
    with atomic_path(path, overwrite=overwrite, mode=mode) as temp:
        temp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True, mode: int = 0o644) -> Path:
    """`atomic_write_bytes` of `text` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite, mode=mode)
