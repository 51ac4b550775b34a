"""Where a workflow may read and write: path inputs resolved and confined before anything runs.

A workflow is data from anywhere (a file, a browser tab, a POST). Every path a node touches is a
declared `InputPath` or `OutputPath` input, and `PathPolicy` decides, at validation, whether its
value is allowed:

* reads resolve (symlinks included) inside one of `read_roots`: the working folder, the output
  folder, folders the user configured and folders plugins ship (the "read_root" components);
  names of shipped things (`Bundled`) resolve through their node's own resolver;
* writes are relative to `output_dir` and resolve inside it: no absolute paths, no `..` escape,
  no symlink that leads out.

A read path that passes is also measured (a stat walk, no reading) against `max_files` and
`max_bytes`, the bounds within which its content fingerprint is computed, so neither the check
nor the fingerprint can stall a run on a huge folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_ROOTS_ENV = "NODEGRAPH_READ_ROOTS"
"""Extra folders nodes may read, separated by os.pathsep (e.g. a models folder)."""

READ_ROOT_COMPONENT = "read_root"
"""Component kind a plugin registers to let nodes read a folder it ships (e.g. its weights)."""

MAX_FILES = 10_000
MAX_BYTES = 4 << 30
UNBOUNDED = 1 << 62
"""The byte bound of `ModelPath` inputs: none (their fingerprint reads headers, not content)."""


class PathRefused(ValueError):
    """A path value outside its allowed roots, or too big to fingerprint."""


def walk_files(path: Path, max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> Iterator[tuple[Path, int]]:
    """Yield (file, size) under `path` (the file itself, or a folder's files in sorted order),
    raising PathRefused as soon as more than `max_files` files or `max_bytes` bytes are seen.
    Symlinked folders are not followed (a link loop or a link to / must not make it endless)."""
    if path.is_file():
        size = path.stat().st_size
        if size > max_bytes:
            raise PathRefused(f"{str(path)!r} is {size} bytes; files above {max_bytes} bytes are not read")
        yield path, size
        return
    if not path.is_dir():
        return
    count = total = 0
    for folder, dirs, files in os.walk(path, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            child = Path(folder) / name
            try:
                if not child.is_file():
                    continue
                size = child.stat().st_size
            except OSError:
                continue
            count += 1
            total += size
            if count > max_files:
                raise PathRefused(f"folder {str(path)!r} holds more than {max_files} files; "
                                  "point at a smaller folder")
            if total > max_bytes:
                raise PathRefused(f"folder {str(path)!r} holds more than {max_bytes} bytes; "
                                  "point at a smaller folder")
            yield child, size


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise PathRefused(f"a {what} path must be a string, got {type(value).__name__}")
    if not value.strip():
        raise PathRefused(f"the {what} path is empty")
    if "\x00" in value:
        raise PathRefused(f"the {what} path contains a NUL character")
    return value


def output_target(output_dir: str | os.PathLike, value: Any) -> Path:
    """The resolved place `value` names under `output_dir`; PathRefused when it would leave it.

    Used by validation and again by the writing node itself, so a symlink planted between the two
    (or a direct Python call) cannot lead a write out either."""
    text = _text(value, "output")
    root = Path(output_dir).resolve()
    if Path(text).is_absolute() or text.startswith("~"):
        raise PathRefused(f"{text!r} must be relative to the output folder {root}, not absolute")
    try:
        target = (root / text).resolve()
    except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop
        raise PathRefused(f"{text!r} cannot be resolved: {err}") from None
    if not target.is_relative_to(root):
        raise PathRefused(f"{text!r} leads outside the output folder {root} (to {target})")
    return target


@dataclass(frozen=True)
class PathPolicy:
    """The roots path inputs are checked against, and the fingerprint bounds."""

    read_roots: tuple[Path, ...]
    output_dir: Path
    max_files: int = MAX_FILES
    max_bytes: int = MAX_BYTES

    @classmethod
    def build(cls, output_dir: str | os.PathLike = "outputs", read_roots: Iterable[str | os.PathLike] | None = None,
              registry: Any = None, **limits: int) -> PathPolicy:
        """Defaults: the working folder, the output folder, $NODEGRAPH_READ_ROOTS and every folder a
        plugin registered as a "read_root" component; `read_roots` replaces the working folder."""
        roots: list[Path] = [Path.cwd()] if read_roots is None else [Path(r) for r in read_roots]
        roots.append(Path(output_dir))
        roots += [Path(p) for p in os.environ.get(READ_ROOTS_ENV, "").split(os.pathsep) if p]
        if registry is not None:
            roots += [Path(registry.component(READ_ROOT_COMPONENT, name))
                      for name in registry.component_names(READ_ROOT_COMPONENT)]
        resolved = tuple(dict.fromkeys(r.expanduser().resolve() for r in roots))
        return cls(resolved, Path(output_dir).resolve(), **limits)

    def check_read(self, value: Any, bundled: Any = None, weights: bool = False) -> Path:
        """The resolved path a read input names; PathRefused unless it is inside a read root (or a
        shipped item named through `bundled`) and within the fingerprint bounds (for `weights`, model
        files fingerprinted by their headers, only the file count is bounded)."""
        text = _text(value, "input")
        if bundled is not None:
            shipped = bundled.resolve(text)
            if shipped is not None:
                return Path(shipped)
        try:
            resolved = Path(text).expanduser().resolve()
        except (OSError, RuntimeError) as err:
            raise PathRefused(f"{text!r} cannot be resolved: {err}") from None
        if not any(resolved.is_relative_to(root) for root in self.read_roots):
            roots = ", ".join(str(r) for r in self.read_roots)
            raise PathRefused(f"{text!r} is outside the folders nodes may read ({roots}); add its folder with "
                              f"--read-root or ${READ_ROOTS_ENV}")
        for _ in walk_files(resolved, self.max_files, UNBOUNDED if weights else self.max_bytes):
            pass
        return resolved

    def check_write(self, value: Any) -> Path:
        return output_target(self.output_dir, value)

    def check(self, spec: Any, value: Any) -> Path:
        """Check `value` for the path input `spec` (an InputSpec with `access`)."""
        if spec.access.mode == "read":
            return self.check_read(value, spec.bundled, spec.access.weights)
        return self.check_write(value)
