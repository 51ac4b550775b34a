"""The scheduler. A `Session` runs workflows and keeps the output cache between runs.

Cache key of a node = hash(type id, version, its coerced widget values, the keys of its linked inputs,
fingerprints of the files it reads): a Merkle signature, so changing one widget re-runs that node
and its descendants only. A run resolves what the requested outputs need by walking back from
them and stopping at cache hits, then executes the misses in topological order. Lazy inputs are
resolved the same way, on demand, when the node calls them.

A node fed lists where it takes one value (see `nodegraph.lists`) runs once per element; each
element has its own key, built like a node's from the keys of the values it receives, and is cached
on its own. Elements that differ only in a `BatchAxis` input run as one call.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import remove_stale_temps
from .cache import MISSING, LRUCache
from .codecs import CODEC_COMPONENT
from .confine import PathPolicy, PathRefused
from .context import Cancelled, CancelToken, Context
from .disk_cache import DEFAULT_LIMIT_BYTES, DiskCache, default_disk_cache_dir, disk_salt
from .events import Event, Subscriber
from .fingerprint import fingerprint
from .lists import (
    ElementCounts,
    ListLengthError,
    ListValue,
    assemble,
    batch_group_key,
    collection_key,
    concat,
    expand,
    item_keys,
    plain,
    split,
    tiled,
)
from .node import InputValueError
from .offload import OffloadingCache
from .plugins import default_registry
from .registry import Registry
from .validate import Plan, PlanNode, compile_workflow
from .workflow import Workflow


class NodeFailed(RuntimeError):
    """A node raised while running. Names the node, its type and the cause; earlier results stay cached."""

    def __init__(self, node_id: str, type_id: str, cause: BaseException | str, hint: str = "") -> None:
        self.node_id, self.type_id = node_id, type_id
        self.cause = cause
        reason = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(f"node {node_id!r} ({type_id}) failed: {reason}{hint}")


class RunCancelled(RuntimeError):
    """The run was cancelled; every node that finished before stays cached."""


class DeviceError(ValueError):
    """A requested device that does not exist or is not usable here."""


def resolve_device(requested: str | None = None) -> str:
    """'cuda' when a GPU is usable, else 'cpu'; an explicit request wins (and is checked)."""
    try:
        import torch
    except ImportError:
        if requested not in (None, "cpu"):
            raise DeviceError(f"device {requested!r} needs torch, which is not installed") from None
        return "cpu"
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise DeviceError(f"unknown device {requested!r}: {err}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but CUDA is not available")
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class RunResult:
    outputs: dict[str, dict[str, Any]]
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0
    node_seconds: dict[str, float] = field(default_factory=dict)
    elements: dict[str, ElementCounts] = field(default_factory=dict)
    """For each node that ran once per list element: which elements ran and which were cached. Such a
    node is in `ran` when any element ran, else in `cached`."""

    def __getitem__(self, node_id: str) -> dict[str, Any]:
        return self.outputs[node_id]

    def value(self, address: str) -> Any:
        """`result.value("node.output")`, or `result.value("node")` for a single-output node."""
        node_id, _, output = address.partition(".")
        outs = self.outputs[node_id]
        if not output:
            if len(outs) != 1:
                raise KeyError(f"node {node_id!r} has outputs {list(outs)}; name one")
            return next(iter(outs.values()))
        return outs[output]


_run_ids = itertools.count(1)


class _Run:
    """State of one run: keys, values by node, event emission."""

    def __init__(self, session: Session, plan: Plan, emit: Callable[[Event], None], token: CancelToken,
                 run_id: int) -> None:
        self.session, self.plan, self.emit, self.token = session, plan, emit, token
        self.run_id = run_id
        self.values: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []
        self.cached: list[str] = []
        self.node_seconds: dict[str, float] = {}
        self.elements: dict[str, ElementCounts] = {}
        self.index = {n: i for i, n in enumerate(plan.order)}
        self.tails: dict[str, bytes] = {}  # per node: the key parts after its links (files, run nonce)
        self._workflow_json: str | None = None
        self.keys = self._keys()

    def _keys(self) -> dict[str, bytes]:
        """Merkle keys: the static digest, then each link as (input, source output, source key), then
        each read file's fingerprint, every part named and delimited so no two layouts hash alike."""
        keys: dict[str, bytes] = {}
        nonce = str(self.run_id).encode()
        for node_id in self.plan.order:
            pn = self.plan.nodes[node_id]
            tail = b""
            for name, path in sorted(pn.read_paths.items()):  # confined at validation, never before
                digest = self._fingerprint(node_id, name, path)
                tail += f"\x00file\x00{name}\x00{len(digest)}\x00".encode() + digest
            if pn.type.side_effect:
                tail += b"\x00run\x00" + nonce
            self.tails[node_id] = tail
            keys[node_id] = self._key(node_id, {name: keys[source] for name, (source, _) in pn.links.items()})
        return keys

    def _key(self, node_id: str, parts: dict[str, bytes]) -> bytes:
        """The key of one call of `node_id` whose linked inputs receive values keyed `parts`: the node's
        key when they are its sources' keys, an element's key when some are list items."""
        pn = self.plan.nodes[node_id]
        hasher = hashlib.blake2b(pn.static_digest, digest_size=16)
        for name, (_, output) in sorted(pn.links.items()):
            hasher.update(f"\x00link\x00{name}\x00{output}\x00".encode())
            hasher.update(parts[name])
        hasher.update(self.tails[node_id])
        return hasher.digest()

    def _fingerprint(self, node_id: str, name: str, path: Path) -> bytes:
        policy = self.plan.paths
        access = self.plan.nodes[node_id].type.inputs[name].access
        weights = bool(access is not None and access.weights)
        try:
            if policy is None:
                return fingerprint(path, weights=weights)
            return fingerprint(path, policy.max_files, policy.max_bytes, weights)
        except (PathRefused, OSError) as err:  # it grew past the bounds after validation, or vanished mid-walk
            pn = self.plan.nodes[node_id]
            raise NodeFailed(node_id, pn.type.id, f"input {name!r}: {err}") from None

    def ensure(self, roots: Iterable[str]) -> None:
        """Make values of `roots` available: cache hits stop the walk, misses run in topo order."""
        to_run: list[str] = []
        stack = list(roots)
        seen: set[str] = set()
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id in self.values:
                continue
            seen.add(node_id)
            pn = self.plan.nodes[node_id]
            if not pn.type.side_effect and not pn.levels:  # a mapped node looks up each element
                hit, source = self._lookup(pn, self.keys[node_id])
                if hit is not MISSING:
                    self.values[node_id] = self._listed(pn, self.keys[node_id], hit)
                    self.cached.append(node_id)
                    self.emit(Event("node_cached", self.run_id, node_id, pn.type.id, info={"source": source}))
                    continue
            to_run.append(node_id)
            inputs = pn.type.inputs
            stack.extend(src for name, (src, _) in pn.links.items() if not inputs[name].lazy)
        self._touch_upstream_of_hits(seen, to_run)
        to_run.sort(key=self.index.__getitem__)
        for node_id in to_run:
            self.execute(node_id)

    def _lookup(self, pn: PlanNode, key: bytes) -> tuple[Any, str]:
        """(outputs, "memory" or "disk") of one call of `pn` (the node, or one list element) from the memory
        cache, else the disk cache (a disk hit is loaded onto the run's device and kept in memory);
        (MISSING, "") when neither has the key."""
        session = self.session
        hit = session.cache.get(key)
        if hit is not MISSING:
            return hit, "memory"
        if session.disk_cache is None:
            return MISSING, ""
        hit = session.disk_cache.load(session.disk_key(key), session.device)
        if hit is MISSING or hit.keys() != pn.type.outputs.keys():
            return MISSING, ""
        session.cache.put(key, hit)
        return hit, "disk"

    def _keep(self, node_id: str, pn: PlanNode, key: bytes, outputs: dict[str, Any]) -> None:
        """Outputs of one call into the memory cache, and into the disk cache when every one has a codec;
        a disk write error is one warning per session."""
        session, disk = self.session, self.session.disk_cache
        session.cache.put(key, outputs)
        if disk is None or not outputs:
            return
        node_type = pn.type
        about = {"node": node_id, "type": node_type.id, "type_version": node_type.version,
                 "plugin": node_type.plugin, "device": session.device, "dtype": session.dtype}
        if not disk.store(session.disk_key(key), outputs, about) and disk.write_error and not session.disk_warned:
            session.disk_warned = True
            self.emit(Event("warning", self.run_id, node_id, node_type.id,
                            message=f"disk cache {disk.root} not written ({disk.write_error}); the run goes on"))

    def _touch_upstream_of_hits(self, seen: set[str], to_run: list[str]) -> None:
        """Keep the entries upstream of a cache hit recent, so LRU does not evict a loaded model
        (still held by the hit) before entries that are really unused."""
        cache = self.session.cache
        running = set(to_run)
        stack = [src for node_id in seen if node_id not in running
                 for src, _ in self.plan.nodes[node_id].links.values() if src not in seen]
        visited = seen  # looked up in this walk already: recent, or about to run
        while stack:
            node_id = stack.pop()
            if node_id in visited:
                continue
            visited.add(node_id)
            cache.touch(self.keys[node_id])
            stack.extend(src for src, _ in self.plan.nodes[node_id].links.values())

    def _lazy(self, source: str, output: str) -> Callable[[], Any]:
        def value() -> Any:
            self.ensure([source])
            return plain(self.values[source][output])
        return value

    @staticmethod
    def _listed(pn: PlanNode, key: bytes, outputs: dict[str, Any]) -> dict[str, Any]:
        """Outputs of one call, with each declared list output as a `ListValue` keyed per item."""
        listed = dict(outputs)
        for name, spec in pn.type.outputs.items():
            if spec.list_kind is not None:
                items = tuple(outputs[name])
                listed[name] = ListValue(items, item_keys(key, name, items), spec.list_kind)
        return listed

    def execute(self, node_id: str) -> None:
        if self.token.cancelled:
            raise RunCancelled(f"run cancelled before node {node_id!r}")
        pn = self.plan.nodes[node_id]
        if pn.levels:
            self._execute_elements(node_id, pn)
            return
        received = {name: self.values[source][output] for name, (source, output) in pn.links.items()
                    if not pn.type.inputs[name].lazy}
        key = self.keys[node_id]
        kwargs = self._arguments(node_id, pn, received)  # linked paths confined before the node starts
        self.emit(Event("node_start", self.run_id, node_id, pn.type.id))
        started = time.perf_counter()
        outputs = self._call(node_id, pn, kwargs, key)
        seconds = time.perf_counter() - started
        self.values[node_id] = self._listed(pn, key, outputs)
        self.ran.append(node_id)
        self.node_seconds[node_id] = seconds
        if not pn.type.side_effect:
            self._keep(node_id, pn, key, outputs)
        self.emit(Event("node_done", self.run_id, node_id, pn.type.id, seconds=seconds))

    def _arguments(self, node_id: str, pn: PlanNode, received: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of one call: widget values, then each linked value checked against its
        input (a list taken whole as a plain list), choices looked up, linked paths confined."""
        node_type = pn.type
        kwargs = dict(pn.values)
        for name, (source, output) in pn.links.items():
            spec = node_type.inputs[name]
            if spec.lazy:
                kwargs[name] = self._lazy(source, output)
                continue
            try:
                kwargs[name] = spec.coerce(plain(received[name]))
            except InputValueError as err:
                raise NodeFailed(node_id, node_type.id, f"input {name!r} from {source}.{output}: {err}") from None
        for name, spec in node_type.inputs.items():
            if spec.choice is not None and isinstance(kwargs.get(name), str):
                try:
                    kwargs[name] = self.session.registry.component(spec.choice, kwargs[name])
                except LookupError as err:
                    raise NodeFailed(node_id, node_type.id, f"input {name!r}: {err}") from None
        for name in node_type.path_inputs:
            if name in pn.links:  # a literal was confined at validation; a linked value is checked as it arrives
                try:
                    self.plan.paths.check(node_type.inputs[name], kwargs[name])
                except PathRefused as err:
                    source, output = pn.links[name]
                    raise NodeFailed(node_id, node_type.id, f"input {name!r} from {source}.{output}: {err}") from None
        return kwargs

    def _call(self, node_id: str, pn: PlanNode, kwargs: dict[str, Any], key: bytes) -> dict[str, Any]:
        """Run the node function once (one value, one element or a batch of elements) and check its outputs."""
        node_type = pn.type
        if node_type.context_param:
            kwargs[node_type.context_param] = Context(
                node_id, node_type.id, self.session.device, self.session.dtype, key,
                str(self.session.output_dir), self.token, self._progress_reporter(node_id, node_type.id),
                self.session.registry, self._warner(node_id, node_type.id), self.workflow_json)
        try:
            outputs = node_type.outputs_as_dict(node_type.fn(**kwargs))
        except (Cancelled, RunCancelled) as err:
            raise RunCancelled(str(err)) from None
        except NodeFailed:
            raise
        except Exception as err:  # noqa: BLE001 - every node failure is reported the same way
            raise NodeFailed(node_id, node_type.id, err, _hint(err)) from err
        for name, spec in node_type.outputs.items():
            if spec.list_kind is not None and not isinstance(outputs[name], (list, tuple)):
                raise NodeFailed(node_id, node_type.id, f"output {name!r} is declared a {spec.list_kind} but the "
                                 f"node returned {type(outputs[name]).__name__}")
        if self.session.check_finite:
            for name, value in outputs.items():
                items = value if node_type.outputs[name].list_kind is not None else (value,)
                if any(_has_non_finite(item) for item in items):
                    raise NodeFailed(node_id, node_type.id, f"output {name!r} contains NaN or infinite values",
                                     " (hint: a scale or step size may be too large)")
        return outputs

    def _execute_elements(self, node_id: str, pn: PlanNode) -> None:
        """Run a mapped node once per element: each element's key is looked up first (and an element equal
        to one before it in this run is not run twice); the rest run, in batches where the node allows."""
        node_type = pn.type
        inputs = {}  # in the node's input order: product combines the first input outermost
        for name, spec in node_type.inputs.items():
            if name in pn.links and not spec.lazy:
                source, output = pn.links[name]
                inputs[name] = (self.values[source][output], self.keys[source], pn.mapped.get(name, ()))
        try:
            elements, tree = expand(pn.levels, pn.list_mode, inputs)
        except ListLengthError as err:
            raise NodeFailed(node_id, node_type.id, str(err)) from None
        keys = [self._key(node_id, {**{n: self.keys[s] for n, (s, _) in pn.links.items()}, **e.parts})
                for e in elements]
        results: list[dict[str, Any] | None] = [None] * len(elements)
        counts = ElementCounts()
        pending: list[tuple[int, dict[str, Any]]] = []
        first: dict[bytes, int] = {}
        repeats: list[tuple[int, int]] = []
        for index, (element, key) in enumerate(zip(elements, keys, strict=True)):
            if not node_type.side_effect:
                if key in first:
                    repeats.append((index, first[key]))
                    continue
                first[key] = index
                hit, _ = self._lookup(pn, key)
                if hit is not MISSING:
                    results[index] = hit
                    counts.cached.append(index)
                    continue
            pending.append((index, self._arguments(node_id, pn, element.received)))
        started = time.perf_counter()
        if pending:
            self.emit(Event("node_start", self.run_id, node_id, node_type.id,
                            info={"elements": len(elements), "to_run": len(pending)}))
            for group in self._batches(pn, pending, elements):
                self._run_group(node_id, pn, group, keys, results)
                counts.ran.extend(index for index, _ in group)
        for index, original in repeats:
            results[index] = results[original]
            counts.cached.append(index)
        counts.ran.sort()
        counts.cached.sort()
        seconds = time.perf_counter() - started
        self.elements[node_id] = counts
        self.values[node_id] = {
            name: assemble(tree, pn.levels, lambda i, name=name: (self._listed(pn, keys[i], results[i])[name], keys[i]))
            for name in node_type.outputs}
        if counts.ran:
            self.ran.append(node_id)
            self.node_seconds[node_id] = seconds
            self.emit(Event("node_done", self.run_id, node_id, node_type.id, seconds=seconds,
                            info={"elements": counts.total, "ran": len(counts.ran), "cached": len(counts.cached)}))
        else:
            self.cached.append(node_id)
            self.emit(Event("node_cached", self.run_id, node_id, node_type.id, info={"elements": counts.total}))

    def _batches(self, pn: PlanNode, pending: list[tuple[int, dict[str, Any]]], elements: list[Any]
                 ) -> list[list[tuple[int, dict[str, Any]]]]:
        """Pending elements in the groups that may run as one call: those that differ only in the node's
        `BatchAxis` inputs (all of them mapped), each alone otherwise."""
        batched = [name for name, spec in pn.type.inputs.items() if spec.batch_axis is not None]
        if not batched or len(pending) < 2 or any(name not in pn.mapped for name in batched) \
                or not any(spec.batch_axis is not None for spec in pn.type.outputs.values()):
            return [[entry] for entry in pending]
        groups: dict[Any, list[tuple[int, dict[str, Any]]]] = {}
        alone: list[list[tuple[int, dict[str, Any]]]] = []
        for index, kwargs in pending:
            group = batch_group_key(kwargs, elements[index].parts, batched)
            if group is None:
                alone.append([(index, kwargs)])
            else:
                groups.setdefault(group, []).append((index, kwargs))
        return [*groups.values(), *alone]

    def _run_group(self, node_id: str, pn: PlanNode, group: list[tuple[int, dict[str, Any]]], keys: list[bytes],
                   results: list[dict[str, Any] | None]) -> None:
        """Run one element, or several as one call: batched inputs concatenated, outputs split back."""
        node_type = pn.type
        if len(group) == 1:
            index, kwargs = group[0]
            outputs = self._call(node_id, pn, kwargs, keys[index])
            pieces = [outputs]
        else:
            batched = {name: spec.batch_axis for name, spec in node_type.inputs.items() if spec.batch_axis is not None}
            kwargs = dict(group[0][1])
            for name, dim in batched.items():
                kwargs[name] = concat([entry[name] for _, entry in group], dim)
            first, dim = next(iter(batched.items()))
            sizes = [entry[first].shape[dim] for _, entry in group]
            with tiled(len(group)):
                outputs = self._call(node_id, pn, kwargs, collection_key([keys[i] for i, _ in group]))
            pieces = [{} for _ in group]
            for name, value in outputs.items():
                axis = node_type.outputs[name].batch_axis
                try:
                    parts = split(value, sizes, axis) if axis is not None else [value] * len(group)
                except ValueError as err:
                    raise NodeFailed(node_id, node_type.id, f"output {name!r}: {err}") from None
                for piece, part in zip(pieces, parts, strict=True):
                    piece[name] = part
        for (index, _), outputs in zip(group, pieces, strict=True):
            results[index] = outputs
            if not node_type.side_effect:
                self._keep(node_id, pn, keys[index], outputs)

    def workflow_json(self) -> str:
        """The run's workflow as saved (subgraphs and modes included), serialised once per run."""
        if self._workflow_json is None:
            self._workflow_json = self.plan.workflow.to_json()
        return self._workflow_json

    def _progress_reporter(self, node_id: str, type_id: str) -> Callable[[int, int, dict[str, Any]], None] | None:
        if self.emit is _ignore:  # nobody listens: a progress call is then only a cancellation check
            return None

        def report(step: int, total: int, info: dict[str, Any]) -> None:
            self.emit(Event("progress", self.run_id, node_id, type_id, step=step, total=total, info=info))
        return report


    def _warner(self, node_id: str, type_id: str) -> Callable[[str], None]:
        def warn(message: str) -> None:
            self.emit(Event("warning", self.run_id, node_id, type_id, message=message))
        return warn


def _has_non_finite(value: Any) -> bool:
    """True for a floating-point torch tensor holding NaN or inf (one reduction; no torch import otherwise)."""
    if type(value).__name__ not in ("Tensor", "Parameter") or not getattr(value, "is_floating_point", None):
        return False
    if not value.is_floating_point() or value.numel() == 0:
        return False
    return not bool(value.isfinite().all())


def _hint(err: BaseException) -> str:
    if type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(err):
        return " (hint: out of device memory; lower the batch size or resolution, or run with --device cpu)"
    return ""


class Session:
    """Runs workflows, one at a time; keeps the output cache and the device choice between runs.

    `disk_cache`: a folder (or a `DiskCache`) where outputs of storable types (tensors, conditions,
    plain values) persist across processes, at most `disk_cache_bytes`; True for the default folder
    (`default_disk_cache_dir`); None (the default for Python use) for none.

    Each run has its own CancelToken, registered under its run id while it runs or waits for the
    run before it: `cancel(run_id)` stops that run only, so two callers sharing a session (the
    editor's page and its API) cannot cancel each other's runs."""

    def __init__(self, registry: Registry | None = None, *, device: str | None = None, dtype: str = "float32",
                 cache_bytes: int = 4 << 30, output_dir: str | os.PathLike = "outputs",
                 check_finite: bool = True, read_roots: Iterable[str | os.PathLike] | None = None,
                 input_roots: Iterable[str | os.PathLike] | None = None, host_cache_bytes: int = 16 << 30,
                 disk_cache: DiskCache | str | os.PathLike | bool | None = None,
                 disk_cache_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.registry = registry if registry is not None else default_registry()
        self.device = resolve_device(device)
        self.dtype = dtype
        self.output_dir = Path(output_dir)
        self.check_finite = check_finite
        # Every run is confined: reads inside `read_roots` (default: the working folder) plus the output
        # folder, $NODEGRAPH_READ_ROOTS and plugin-shipped folders; writes inside the output folder.
        # `input_roots` is the former name of `read_roots`.
        self.paths = PathPolicy.build(self.output_dir, read_roots if read_roots is not None else input_roots,
                                      self.registry)
        remove_stale_temps(self.output_dir)  # leftovers of writes killed in an earlier process
        # On an accelerator the budget is device memory, and what it evicts waits in host memory
        # (nodegraph.offload) instead of being loaded again from disk.
        self.cache = (LRUCache(cache_bytes) if self.device == "cpu"
                      else OffloadingCache(cache_bytes, host_cache_bytes, self.device))
        if disk_cache is True:
            disk_cache = default_disk_cache_dir()
        if disk_cache is None or disk_cache is False:
            self.disk_cache: DiskCache | None = None
        elif isinstance(disk_cache, DiskCache):
            self.disk_cache = disk_cache
        else:
            codecs = self.registry.components.get(CODEC_COMPONENT, {}).values()
            self.disk_cache = DiskCache(disk_cache, disk_cache_bytes, codecs)
        self.disk_warned = False
        self._disk_salt: bytes | None = None
        self.subscribers: list[Subscriber] = []
        self._lock = threading.Lock()  # one run at a time: they share the cache and the device
        self._tokens: dict[int, CancelToken] = {}  # run id -> token, for runs running or waiting
        self._tokens_lock = threading.Lock()

    def disk_key(self, key: bytes) -> bytes:
        """The disk cache's key for a node's Merkle key. It adds what decides the numbers besides the
        inputs and is the same in every process with the same: the device type (CUDA and CPU random
        numbers differ), the dtype, the numeric libraries' versions, and the source of the engine and of
        every plugin that gave a node type or a codec (`code_fingerprint`, taken once per Session)."""
        if self._disk_salt is None:
            codecs = self.registry.components.get(CODEC_COMPONENT, {}).values()
            # a function without a module ("" is none) has unknown code: then nothing is shared
            modules = {"nodegraph", *(getattr(t.fn, "__module__", None) or "" for t in self.registry.nodes.values()),
                       *(type(c).__module__ for c in codecs)}
            self._disk_salt = disk_salt(self.device, self.dtype, modules)
        return hashlib.blake2b(self._disk_salt + key, digest_size=16).digest()

    @property
    def read_roots(self) -> tuple[Path, ...]:
        return self.paths.read_roots

    def compile(self, workflow: Workflow) -> Plan:
        """Validate against the registry and this session's path roots (nothing runs on a problem)."""
        return compile_workflow(workflow, self.registry, self.paths)

    def cancel(self, run_id: int | None = None) -> bool:
        """Ask run `run_id` (the id its events carry) to stop at its next node boundary or progress
        report, or before its first node if it is still waiting; without an id, every run of this
        session. False when no such run is running or waiting."""
        with self._tokens_lock:
            tokens = list(self._tokens.values()) if run_id is None else [self._tokens.get(run_id)]
        found = [token for token in tokens if token is not None]
        for token in found:
            token.cancel()
        return bool(found)

    def subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def run(self, workflow: Workflow | Plan, outputs: Iterable[str] | None = None,
            on_event: Subscriber | None = None, *, cancel_token: CancelToken | None = None) -> RunResult:
        """Validate (unless given a Plan), run what `outputs` need (default: the output nodes).

        `cancel_token`: the caller's own handle on this run (a fresh one by default); cancelling it
        stops this run only, even before it starts."""
        plan = workflow if isinstance(workflow, Plan) else self.compile(workflow)
        if plan.paths != self.paths:  # confined under other roots: check again under ours
            plan = self.compile(plan.workflow)
        targets = list(outputs) if outputs is not None else plan.output_nodes()
        not_running = [f"{t!r} ({plan.skipped[t]})" for t in targets if t in plan.skipped]
        if not_running:
            raise KeyError(f"requested outputs do not run: {', '.join(not_running)}")
        unknown = [t for t in targets if t not in plan.nodes]
        if unknown:
            raise KeyError(f"requested outputs {unknown} are not nodes of this workflow")
        listeners = [*self.subscribers, *([on_event] if on_event is not None else [])]

        def emit(event: Event) -> None:
            for listener in listeners:
                listener(event)

        run_id = next(_run_ids)
        token = cancel_token if cancel_token is not None else CancelToken()
        with self._tokens_lock:
            self._tokens[run_id] = token
        try:
            with self._lock:  # keys (file fingerprints) too are taken only once the run before has finished
                return self._run_locked(_Run(self, plan, emit if listeners else _ignore, token, run_id), targets)
        finally:
            with self._tokens_lock:
                del self._tokens[run_id]

    def _run_locked(self, run: _Run, targets: list[str]) -> RunResult:
        emit, plan = run.emit, run.plan
        started = time.perf_counter()
        emit(Event("run_start", run.run_id, info={"nodes": len(plan.nodes), "targets": len(targets)}))
        for node_id, reason in plan.skipped.items():
            emit(Event("node_skipped", run.run_id, node_id, message=reason))
        try:
            run.ensure(targets)
        except NodeFailed as err:
            emit(Event("node_error", run.run_id, err.node_id, err.type_id, message=str(err)))
            emit(Event("run_done", run.run_id, status="failed", seconds=time.perf_counter() - started))
            raise
        except RunCancelled:
            emit(Event("run_done", run.run_id, status="cancelled", seconds=time.perf_counter() - started))
            raise
        seconds = time.perf_counter() - started
        emit(Event("run_done", run.run_id, status="ok", seconds=seconds,
                   info={"ran": len(run.ran), "cached": len(run.cached)}))
        outputs = {t: {name: plain(value) for name, value in run.values[t].items()} for t in targets}
        return RunResult(outputs, run.ran, run.cached, seconds, run.node_seconds, run.elements)


def _ignore(event: Event) -> None:
    return None


def run(workflow: Workflow, outputs: Iterable[str] | None = None, on_event: Subscriber | None = None,
        **session_options: Any) -> RunResult:
    """One-shot run in a fresh Session (use a Session to keep the cache between runs)."""
    return Session(**session_options).run(workflow, outputs=outputs, on_event=on_event)
