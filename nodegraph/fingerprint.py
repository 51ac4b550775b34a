"""File fingerprints folded into the cache keys of nodes that read files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

from .confine import MAX_BYTES, MAX_FILES, UNBOUNDED, PathRefused, walk_files

SMALL_FILE = 16 << 20
"""Files of a weights input up to this size (configs, tokenizers) are hashed whole."""
MAX_HEADER = 100 << 20

MEMO_ENTRIES = 1024
"""Digests remembered at most: a long-lived server reading many files must not grow without bound."""

_memo: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
_memo_lock = threading.Lock()


def _file_digest(path: Path, stat: os.stat_result) -> bytes:
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _memo_lock:
        digest = _memo.get(memo_key)
        if digest is not None:
            _memo.move_to_end(memo_key)
            return digest
    hasher = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    digest = hasher.digest()
    with _memo_lock:
        _memo[memo_key] = digest
        while len(_memo) > MEMO_ENTRIES:
            _memo.popitem(last=False)  # least recently used
    return digest


def _weights_digest(path: Path, stat: os.stat_result) -> bytes:
    """A model file's identity without reading its gigabytes: size, modification time and, for
    safetensors, the header (every tensor's name, dtype, shape and offsets); small files whole."""
    if stat.st_size <= SMALL_FILE:
        return _file_digest(path, stat)
    hasher = hashlib.blake2b(f"{stat.st_size}\x00{stat.st_mtime_ns}\x00".encode(), digest_size=16)
    if path.suffix == ".safetensors":
        with path.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            hasher.update(handle.read(min(length, MAX_HEADER)))
    return hasher.digest()


def fingerprint(value: object, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES,
                weights: bool = False) -> bytes:
    """Content hash of a file, or of a folder's file names, sizes and contents; b'missing' if absent.

    Content (not only mtime) so that rewriting a file within the clock's resolution still counts;
    digests are memoised by (path, size, mtime), least recently used first out past `MEMO_ENTRIES`,
    so an unchanged large file is hashed once. Bounded: past `max_files` files or `max_bytes` bytes
    it raises `PathRefused` instead of reading on (validation checks the same bounds first).
    Callers pass a path that validation already confined (`PathPolicy.check_read`). `weights`
    (a `ModelPath` input): large files are identified by size, time and safetensors header instead.
    """
    digest = _weights_digest if weights else _file_digest
    if weights:
        max_bytes = UNBOUNDED
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        return b""
    path = Path(value).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return b"missing"
    if path.is_file():
        if stat.st_size > max_bytes:
            raise PathRefused(f"{str(path)!r} is {stat.st_size} bytes; files above {max_bytes} bytes are not read")
        return digest(path, stat)
    if path.is_dir():
        hasher = hashlib.blake2b(digest_size=16)
        for child, _size in walk_files(path, max_files, max_bytes):
            hasher.update(str(child.relative_to(path)).encode() + b"\x00")
            hasher.update(digest(child, child.stat()))
        return hasher.digest()
    return b"other"
