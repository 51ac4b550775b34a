"""The persistent output cache: node outputs under their Merkle key, shared by processes and workers.

Layout: `ROOT/v1/ab/<32 hex>.safetensors`, one file per entry, `ab` the first two hex digits of the key
(entries spread over at most 256 folders), plus `ROOT/CACHEDIR.TAG` so that backup tools
skip the folder. A file is an ordinary safetensors file (any safetensors reader opens it) whose
tensors are the entry's arrays and whose `__metadata__` holds two strings:

* "nodegraph": the entry as JSON: format, key, node id, type, type version, plugin, device, dtype,
  creation time, the outputs as codec trees (`nodegraph.codecs`) and, per array, dtype, shape and a
  blake2b digest of its bytes;
* "checksum": blake2b of that JSON string.

Reading verifies both: the JSON against the checksum, each array's dtype, shape and bytes against the
JSON. A file that fails (flipped bytes, truncated, not written by us, a symlink, too large) is removed
and reported as a miss, so the node is recomputed and its entry written again. Nothing is unpickled:
the file is parsed here as an 8-byte header length, a JSON header and raw bytes.

Writes go through `nodegraph.atomic` (a hidden temporary file beside the entry, renamed over the
final name), so concurrent writers of one key each publish a complete file, the last one wins, and a
reader never sees a partial file (it opens final names only). They are not fsynced (a cache needs no
durability, and two fsyncs cost more than writing a small entry): after a power loss an entry may be
empty or partial, which its checksum detects.

Eviction: each file's modification time is its last use (set on write and on every hit). When the
entries add up to more than the size limit, the least recently used are deleted until they fit.
A process knows the total from its last scan of the folder plus its own writes, and scans again when
that passes the limit or the scan is older than `RESCAN_SECONDS` (other processes write too), so
the folder exceeds the limit by at most what other processes wrote since. The limit counts entries
only; temporary files of killed writers are swept at each scan (as in `atomic`).

The key is the caller's: the Session derives it from the node's Merkle key and what else decides
the numbers (device type, dtype, the code of the engine and of the plugins), see `code_fingerprint`.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import math
import os
import re
import secrets
import stat
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_path, atomic_write_text, remove_stale_temps
from .cache import MISSING
from .codecs import Array, Codec, CorruptEntry, Decoder, Encoder, NotStorable, codec_table

FORMAT = "nodegraph/disk-cache"
FORMAT_VERSION = 1
DEFAULT_LIMIT_BYTES = 2048 << 20
RESCAN_SECONDS = 2.0
MAX_HEADER_BYTES = 100 << 20
ENTRY_NAME = re.compile(r"^[0-9a-f]{32}\.safetensors$")
SHARD_NAME = re.compile(r"^[0-9a-f]{2}$")
CACHEDIR_TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
                "# This file is a cache directory tag created by nodegraph (its disk cache).\n")

DISK_CACHE_ENV = "NODEGRAPH_DISK_CACHE"
DATA_DIR_ENV = "NODEGRAPH_DATA_DIR"
OFF_VALUES = frozenset({"off", "0", "false", "no", "none"})


def default_disk_cache_dir() -> Path | None:
    """Where `nodegraph run` keeps its disk cache unless told otherwise (None: switched off).

    $NODEGRAPH_DISK_CACHE (a folder, or "off"), else $NODEGRAPH_DATA_DIR/cache, else
    $XDG_CACHE_HOME/nodegraph, else ~/.cache/nodegraph."""
    chosen = os.environ.get(DISK_CACHE_ENV, "").strip()
    if chosen:
        return None if chosen.lower() in OFF_VALUES else Path(chosen).expanduser()
    data = os.environ.get(DATA_DIR_ENV, "").strip()
    if data:
        return Path(data).expanduser() / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "nodegraph"


# the file ---------------------------------------------------------------------------------------------

def _digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Packed:
    """A safetensors file in pieces: `head` (u64 little-endian header length, then the JSON header
    padded with spaces to a multiple of 8) followed by every array's bytes in order."""

    head: bytes
    arrays: tuple[Array, ...]

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(a.data) for a in self.arrays)

    def write(self, path: Path) -> None:
        with open(path, "wb") as handle:
            handle.write(self.head)
            for array in self.arrays:
                handle.write(array.data)


def pack(arrays: Mapping[str, Array], metadata: Mapping[str, str]) -> Packed:
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": array.dtype, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(array.data)]}
        offset += len(array.data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    return Packed(struct.pack("<Q", len(text)) + text, tuple(arrays.values()))


def unpack(blob: bytes) -> tuple[dict[str, str], dict[str, Array]]:
    """The metadata and arrays of a safetensors file; CorruptEntry unless every byte is accounted for."""
    if len(blob) < 8:
        raise CorruptEntry("shorter than a safetensors header")
    (length,) = struct.unpack("<Q", blob[:8])
    if length > min(len(blob) - 8, MAX_HEADER_BYTES):
        raise CorruptEntry(f"header length {length} exceeds the file")
    try:
        header = json.loads(blob[8:8 + length])
    except (UnicodeDecodeError, ValueError) as err:
        raise CorruptEntry(f"header is not JSON: {err}") from None
    if type(header) is not dict:
        raise CorruptEntry("header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if type(metadata) is not dict or not all(type(v) is str for v in metadata.values()):
        raise CorruptEntry("metadata is not a map of strings")
    data = memoryview(blob)[8 + length:]
    arrays: dict[str, Array] = {}
    spans = []
    for name, info in header.items():
        try:
            begin, end = info["data_offsets"]
            if not (type(begin) is int and type(end) is int and 0 <= begin <= end <= len(data)):
                raise CorruptEntry(f"array {name!r}: offsets outside the data")
            arrays[name] = Array(info["dtype"], tuple(info["shape"]), data[begin:end])
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptEntry(f"array {name!r}: {err}") from None
        spans.append((begin, end))
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise CorruptEntry("array data overlaps or leaves holes")
        position = end
    if position != len(data):
        raise CorruptEntry(f"{len(data) - position} bytes after the last array")
    return metadata, arrays


# the code that decides the numbers ---------------------------------------------------------------

def _code_root(module_name: str) -> Path | None:
    """The folder of the top package holding `module_name` (climbing while __init__.py exists), or its
    file for a lone module; None when the module has no source file (interactive, built in)."""
    module = sys.modules.get(module_name)
    source = getattr(module, "__file__", None)
    if not source:
        return None
    path = Path(source).resolve()
    root, folder = path, path.parent
    while (folder / "__init__.py").is_file():
        root, folder = folder, folder.parent
    return root


def _tree_digest(root: Path) -> bytes:
    hasher = hashlib.blake2b(digest_size=16)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    for path in files:
        content = path.read_bytes()
        name = path.name if path == root else path.relative_to(root).as_posix()
        hasher.update(f"{name}\x00{len(content)}\x00".encode())
        hasher.update(content)
    return hasher.digest()


_PROCESS_NONCE = secrets.token_bytes(16)


def code_fingerprint(module_names: Iterable[str]) -> bytes:
    """Digest of the Python source of every package the modules belong to (every .py file in them).

    A stored output is reused only by identical code: editing a node (or anything in its package)
    without bumping its version must not bring back what the old code computed. A module without a
    source file makes the fingerprint unique to this process (nothing is shared)."""
    hasher = hashlib.blake2b(digest_size=16)
    roots = {_code_root(name) for name in module_names}
    if None in roots:
        hasher.update(_PROCESS_NONCE)
    for root in sorted(r for r in roots if r is not None):
        try:
            digest = _tree_digest(root)
        except OSError:  # unreadable source: unknown code, shared with no other process
            digest = _PROCESS_NONCE
        hasher.update(str(root.name).encode() + b"\x00" + digest)
    return hasher.digest()


NUMERIC_LIBRARIES = ("torch", "numpy", "diffusers", "transformers", "peft", "safetensors", "pillow")
"""Installed libraries whose version may change the numbers a node computes (kernels, defaults)."""


def library_versions(names: Iterable[str] = NUMERIC_LIBRARIES) -> str:
    """"name=version" of each installed library in `names` ("name=-" when absent), one string."""
    found = []
    for name in names:
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=-")
    return ",".join(found)


def disk_salt(device: str, dtype: str, module_names: Iterable[str]) -> bytes:
    """What a disk key adds to a Merkle key: the device type (CUDA and CPU draw different random numbers;
    "cuda:0" and "cuda:1" the same), the dtype, the versions of the numeric libraries (a new torch may
    compute other numbers) and `code_fingerprint` of the modules."""
    device_type = device.split(":")[0]
    return (f"nodegraph-disk\x00{device_type}\x00{dtype}\x00{library_versions()}\x00".encode()
            + code_fingerprint(module_names))


# the store ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EntryFile:
    path: Path
    size: int
    used_ns: int


class DiskCache:
    """Node outputs on disk under `root`, at most `limit_bytes` of entries, stored with `codecs`.

    `load(key, device)` returns the outputs dict or MISSING; `store(key, outputs, about)` writes them
    when every output has a codec (returns False otherwise, and on a write error, which it keeps in
    `write_error`). Neither raises for a damaged, foreign or unwritable cache: the run goes on."""

    def __init__(self, root: str | os.PathLike, limit_bytes: int = DEFAULT_LIMIT_BYTES,
                 codecs: Iterable[Codec] = ()) -> None:
        self.root = Path(root).expanduser().absolute()
        self.folder = self.root / f"v{FORMAT_VERSION}"
        self.limit_bytes = int(limit_bytes)
        codecs = list(codecs)
        self.by_type = codec_table(codecs)
        self.by_name = {c.name: c for c in codecs}
        self.hits = self.misses = self.stores = self.unstorable = self.corrupt = self.evictions = 0
        self.write_error: str | None = None
        self.rescan_seconds = RESCAN_SECONDS
        self._total: int | None = None  # bytes of entries: the last scan plus this process's writes since
        self._scanned_at = -math.inf
        self._lock = threading.Lock()
        self._last_ns = 0
        self._tagged = False

    def __repr__(self) -> str:
        return f"DiskCache({str(self.root)!r}, limit_bytes={self.limit_bytes})"

    def path(self, key: bytes) -> Path:
        name = key.hex()
        if len(name) != 32:
            raise ValueError(f"a disk cache key has 16 bytes, got {len(key)}")
        return self.folder / name[:2] / f"{name}.safetensors"

    def _now_ns(self) -> int:
        """Wall-clock ns, strictly increasing within the process (file times order the entries by use)."""
        with self._lock:
            self._last_ns = max(time.time_ns(), self._last_ns + 1)
            return self._last_ns

    def _mark_used(self, path: Path) -> None:
        now = self._now_ns()
        try:
            os.utime(path, ns=(now, now), follow_symlinks=False)
        except OSError:
            pass  # evicted by another process meanwhile: the value in hand is still good

    # reading ---------------------------------------------------------------------------------------
    def _read(self, path: Path) -> bytes:
        """The file's bytes; CorruptEntry for anything but a regular file within the limit."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise CorruptEntry("a symbolic link, not an entry") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise CorruptEntry("not a regular file")
            if info.st_size > self.limit_bytes:
                raise CorruptEntry(f"{info.st_size} bytes, more than the cache limit")
            with os.fdopen(fd, "rb", closefd=False) as handle:
                blob = handle.read()
            if len(blob) != info.st_size:
                raise CorruptEntry("changed while read")
            return blob
        finally:
            os.close(fd)

    def verify(self, key: bytes, blob: bytes) -> tuple[dict[str, Any], dict[str, Array]]:
        """The entry's JSON and arrays, or CorruptEntry: checksum, key, format and each array checked."""
        metadata, arrays = unpack(blob)
        text, checksum = metadata.get("nodegraph"), metadata.get("checksum")
        if text is None or checksum is None:
            raise CorruptEntry("not a nodegraph cache entry")
        if _digest(text.encode("utf-8")) != checksum:
            raise CorruptEntry("checksum mismatch")
        entry = json.loads(text)
        if entry.get("format") != FORMAT or entry.get("version") != FORMAT_VERSION or entry.get("key") != key.hex():
            raise CorruptEntry("format or key differs")
        if type(entry.get("outputs")) is not dict:
            raise CorruptEntry("outputs are not a map of names")
        listed = entry.get("arrays")
        if type(listed) is not dict or listed.keys() != arrays.keys():
            raise CorruptEntry("arrays differ from the listed ones")
        for name, array in arrays.items():
            info = listed[name]
            if (info.get("dtype") != array.dtype or info.get("shape") != list(array.shape)
                    or info.get("blake2b") != _digest(array.data)):
                raise CorruptEntry(f"array {name!r} differs from its record")
        return entry, arrays

    def load(self, key: bytes, device: str = "cpu") -> Any:
        """The stored outputs ({output name: value}, arrays on `device`), or MISSING.

        A hit marks the entry used. A damaged or foreign file is removed (the node then runs again and
        its entry is written anew). A verified entry this process cannot rebuild (a codec it lacks or
        that fails, memory) is a miss and stays."""
        path = self.path(key)
        try:
            entry, arrays = self.verify(key, self._read(path))
        except FileNotFoundError:
            self.misses += 1
            return MISSING
        except Exception:  # noqa: BLE001 - damaged, truncated or foreign: recompute, never crash
            self.corrupt += 1
            self.misses += 1
            self._remove(path)
            return MISSING
        try:
            decoder = Decoder(self.by_name, arrays, device)
            outputs = {name: decoder.value(tree) for name, tree in entry["outputs"].items()}
        except Exception:  # noqa: BLE001 - see above: a miss, never a crash
            self.misses += 1
            return MISSING
        self.hits += 1
        self._mark_used(path)
        return outputs

    def _remove(self, path: Path) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    # writing ---------------------------------------------------------------------------------------
    def encode(self, key: bytes, outputs: Mapping[str, Any], about: Mapping[str, Any] | None = None) -> Packed:
        """The file for `outputs` under `key`; NotStorable when an output has no codec."""
        encoder = Encoder(self.by_type)
        tree = {str(name): encoder.value(value) for name, value in outputs.items()}
        entry = {**(about or {}), "format": FORMAT, "version": FORMAT_VERSION, "key": key.hex(),
                 "created": time.time(), "outputs": tree,
                 "arrays": {name: {"dtype": a.dtype, "shape": list(a.shape), "blake2b": _digest(a.data)}
                            for name, a in encoder.arrays.items()}}
        try:
            text = json.dumps(entry, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError) as err:  # a codec returned data JSON cannot hold
            raise NotStorable(f"not JSON: {err}") from None
        return pack(encoder.arrays, {"nodegraph": text, "checksum": _digest(text.encode("ascii"))})

    def store(self, key: bytes, outputs: Mapping[str, Any], about: Mapping[str, Any] | None = None) -> bool:
        """Write `outputs` under `key` (atomically; replaces an entry of the same key). False when they are
        not storable, larger than the limit, or the write failed (`write_error` says why)."""
        try:
            packed = self.encode(key, outputs, about)
        except (NotStorable, RecursionError):
            self.unstorable += 1
            return False
        if packed.size > self.limit_bytes:
            self.unstorable += 1
            return False
        path = self.path(key)
        try:
            self._tag()
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, mode=0o600, durable=False) as temp:  # checksums catch a crash's leftovers
                packed.write(temp)
        except OSError as err:
            self.write_error = f"{type(err).__name__}: {err}"
            return False
        self._mark_used(path)
        self.stores += 1
        with self._lock:
            if self._total is not None:
                self._total += packed.size
            scan = (self._total is None or self._total > self.limit_bytes
                    or time.monotonic() - self._scanned_at > self.rescan_seconds)
        if scan:
            self.evict()
        return True

    def _tag(self) -> None:
        if self._tagged:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            try:
                atomic_write_text(tag, CACHEDIR_TAG, overwrite=False)
            except FileExistsError:
                pass
        self._tagged = True

    # eviction --------------------------------------------------------------------------------------
    def entries(self) -> list[EntryFile]:
        """Every entry file (names of our pattern only, regular files only), least recently used first."""
        found = []
        try:
            shards = [e for e in os.scandir(self.folder)
                      if SHARD_NAME.match(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        for shard in shards:
            try:
                items = list(os.scandir(shard.path))
            except OSError:
                continue
            for item in items:
                if not ENTRY_NAME.match(item.name):
                    continue
                try:
                    info = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(EntryFile(Path(item.path), info.st_size, info.st_mtime_ns))
        return sorted(found, key=lambda e: (e.used_ns, e.path.name))

    @property
    def total_bytes(self) -> int:
        """Bytes of all entries now on disk (a scan: other processes write here too)."""
        return sum(e.size for e in self.entries())

    def evict(self) -> list[Path]:
        """Delete the least recently used entries until the rest fit the limit; returns the deleted ones.
        Also sweeps temporary files left by writers killed mid-write."""
        with self._lock:
            entries = self.entries()
            total = sum(e.size for e in entries)
            removed = []
            for entry in entries:
                if total <= self.limit_bytes:
                    break
                self._remove(entry.path)
                removed.append(entry.path)
                total -= entry.size
            self.evictions += len(removed)
            self._total = total
            self._scanned_at = time.monotonic()
        for shard in {e.path.parent for e in entries}:
            remove_stale_temps(shard)
        return removed

    def clear(self) -> None:
        """Delete every entry (nothing else in the folder)."""
        for entry in self.entries():
            self._remove(entry.path)
        with self._lock:
            self._total = 0

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "stored": self.stores, "not_storable": self.unstorable,
                "corrupt": self.corrupt, "evicted": self.evictions}
