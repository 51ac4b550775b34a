"""File fingerprints folded into the cache keys of nodes that read files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

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


def fingerprint(value: object) -> bytes:
    """Content hash of a file, or of a folder's file names, sizes and contents; b'missing' if absent.

    Content (not only mtime) so that rewriting a file within the clock's resolution still counts;
    digests are memoised by (path, size, mtime), least recently used first out past `MEMO_ENTRIES`,
    so an unchanged large file is hashed once.
    """
    if not isinstance(value, str) or not value:
        return b""
    path = Path(value).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return b"missing"
    if path.is_file():
        return _file_digest(path, stat)
    if path.is_dir():
        hasher = hashlib.blake2b(digest_size=16)
        for child in sorted(path.rglob("*")):
            if child.is_file():
                hasher.update(str(child.relative_to(path)).encode())
                hasher.update(_file_digest(child, child.stat()))
        return hasher.digest()
    return b"other"
