"""What a running node may ask of the engine: device, dtype, randomness, progress, cancellation."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Cancelled(Exception):
    """Raised inside a node (by `Context.check_cancelled`) or between nodes when a run is cancelled."""


class CancelToken:
    """Thread-safe flag shared between whoever wants to stop a run and the run itself."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def reset(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled (True) or `timeout` seconds pass (False): for a node waiting on
        something outside the run, so that a cancel wakes it at once instead of at its next poll."""
        return self._event.wait(timeout)


ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class Context:
    """Handed to nodes that declare a parameter annotated `Context`.

    `generator()` is seeded from the node's cache key unless a seed is given, so a node with the
    same inputs draws the same numbers in every run and on every machine of the same device kind.
    """

    node_id: str
    node_type: str
    device: str = "cpu"
    dtype: str = "float32"
    key: bytes = b""
    output_dir: str = "outputs"
    cancel_token: CancelToken = field(default_factory=CancelToken)
    _progress: ProgressFn | None = None
    _registry: Any = None
    _warn: Callable[[str], None] | None = None
    _workflow: Callable[[], str] | None = None

    def workflow_json(self) -> str | None:
        """The JSON of the workflow this node runs in, with every override applied (what a save node
        embeds in its files so they can be run again); None outside a Session run."""
        return self._workflow() if self._workflow is not None else None

    def component(self, kind: str, name: str) -> Any:
        """A registered component (solver, path, architecture...) by kind and name."""
        if self._registry is None:
            raise LookupError(f"no registry in this context to look up {kind} {name!r}")
        return self._registry.component(kind, name)

    def components(self, kind: str) -> dict[str, Any]:
        """Every registered component of `kind`, by name (empty without a registry)."""
        if self._registry is None:
            return {}
        return {name: self._registry.component(kind, name) for name in self._registry.component_names(kind)}

    def output_path(self, relative: str) -> Path:
        """Where `relative` (a file, folder or prefix from an `OutputPath` input) lies in the output
        folder, resolved. Validation already refused escapes; checking again at write time also
        covers a symlink planted since, a linked value and a node called as plain Python.
        Raises `PathRefused` (a ValueError) when it would leave the output folder."""
        from .confine import output_target

        return output_target(self.output_dir, relative)

    def generator(self, seed: int | None = None, device: str | None = None):
        import torch

        if seed is None:
            seed = int.from_bytes(hashlib.blake2b(self.key, digest_size=8).digest(), "little") >> 1
        gen = torch.Generator(device=device or self.device)
        gen.manual_seed(int(seed))
        return gen

    @property
    def torch_device(self):
        import torch

        return torch.device(self.device)

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def progress(self, step: int, total: int, **info: Any) -> None:
        """Report progress inside a long node (solver step, training step); also checks cancel."""
        self.check_cancelled()
        if self._progress is not None:
            self._progress(step, total, info)

    def warn(self, message: str) -> None:
        """Report something the user should know that does not stop the node (a "warning" event;
        the CLI prints it, the editor shows it)."""
        if self._warn is not None:
            self._warn(message)

    def check_cancelled(self) -> None:
        if self.cancel_token.cancelled:
            raise Cancelled(f"run cancelled in node {self.node_id!r}")
