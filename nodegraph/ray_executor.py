"""Many workers with Ray: workflows (jobs, sweep elements) run on Ray actors that each hold a Session.

    executor = RayExecutor(WorkerSpec(output_dir="outputs"), workers=2)      # or address="ray://host:10001"
    result, worker = executor.run(workflow)
    results = executor.map([variant_a, variant_b, ...])                     # concurrently, one per actor

Why actors: a Session keeps loaded models and outputs in its cache, so an actor that ran a workflow
runs the next one with the same models without loading them again. `run` prefers the actor that already
read the files the workflow reads (its model folders and checkpoints: the resolved read paths of its
nodes), then the least busy one. Validation happens here, in the caller, before anything is sent: an
invalid workflow never reaches a worker.

Results are the worker Session's: the same code on the same device kind gives bit-identical numbers to
an in-process run (random numbers are seeded from cache keys, never from the process). Events are
collected on the worker and replayed to `on_event` when the run ends (no live progress from a worker).

A worker that dies mid-run (killed, out of memory, its machine gone) is replaced by a fresh actor and the
run is sent to another worker; after as many deaths as there are workers the run fails. Cancelling
(`cancel_token`) asks the worker's Session to stop at its next node boundary or progress report.

Transport: workflows travel as JSON text; results (tensors, plain values) travel through Ray's object
store, which serialises with pickle between the processes Ray itself started. Nothing is unpickled from
files. Files that nodes save are written by the worker, on its machine, under its output folder.

Without Ray installed, creating a RayExecutor raises `RayUnavailable` with the install command.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .context import CancelToken
from .events import Event, Subscriber
from .lists import ElementCounts
from .session import NodeFailed, RunCancelled, RunResult, Session
from .validate import Plan
from .workflow import Workflow

INSTALL_HINT = 'Ray is not installed; install it with: pip install "nodegraph[ray]"'
WAIT_SLICE = 0.25
"""Seconds between checks of the cancel token while a worker runs (the result is taken the moment it
is ready; this only bounds how late a cancel is passed on)."""


class RayUnavailable(RuntimeError):
    """`--executor ray` without Ray installed."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """How each worker builds its Session (the same options as `nodegraph run`)."""

    device: str | None = None
    dtype: str = "float32"
    cache_bytes: int = 4 << 30
    output_dir: str = "outputs"
    read_roots: tuple[str, ...] | None = None
    disk_cache: str | None = None
    disk_cache_bytes: int = 2048 << 20
    plugin_dirs: tuple[str, ...] = ()
    disabled_plugins: tuple[str, ...] = ()
    only_plugins: tuple[str, ...] | None = None
    threads: int | None = None

    @classmethod
    def like(cls, session: Session, plugin_dirs: Sequence[str] = (), disabled_plugins: Sequence[str] = (),
             only_plugins: Sequence[str] | None = None, threads: int | None = None,
             cache_bytes: int = 4 << 30) -> WorkerSpec:
        """Workers that build a Session like `session` (absolute folders: a worker may start elsewhere)."""
        disk = session.disk_cache
        return cls(device=session.device, dtype=session.dtype, cache_bytes=cache_bytes,
                   output_dir=str(session.output_dir.resolve()),
                   read_roots=tuple(str(root) for root in session.read_roots),
                   disk_cache=str(disk.root) if disk is not None else None,
                   disk_cache_bytes=disk.limit_bytes if disk is not None else 2048 << 20,
                   plugin_dirs=tuple(plugin_dirs), disabled_plugins=tuple(disabled_plugins),
                   only_plugins=tuple(only_plugins) if only_plugins is not None else None, threads=threads)

    def session(self) -> Session:
        from .plugins import load_registry

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        registry, _ = load_registry(list(self.plugin_dirs), disabled=self.disabled_plugins,
                                    only=list(self.only_plugins) if self.only_plugins is not None else None)
        return Session(registry, device=self.device, dtype=self.dtype, cache_bytes=self.cache_bytes,
                       output_dir=self.output_dir, read_roots=self.read_roots,
                       disk_cache=self.disk_cache, disk_cache_bytes=self.disk_cache_bytes)


class SessionWorker:
    """The actor: one Session, its cache kept between runs. Made a Ray actor by `RayExecutor`."""

    def __init__(self, name: str, spec: WorkerSpec) -> None:
        self.name = name
        self.session = spec.session()

    def pid(self) -> int:
        return os.getpid()

    def cancel(self) -> bool:
        return self.session.cancel()

    def run(self, workflow_json: str, outputs: list[str] | None) -> dict[str, Any]:
        events: list[dict[str, Any]] = []
        try:
            result = self.session.run(Workflow.from_json(workflow_json), outputs=outputs,
                                      on_event=lambda event: events.append(event.as_dict()))
        except NodeFailed as err:
            reason = str(err).split(" failed: ", 1)[-1]  # cause and hint, as the message says them
            return {"failed": [err.node_id, err.type_id, reason], "events": events}
        except RunCancelled as err:
            return {"cancelled": str(err), "events": events}
        return {"outputs": result.outputs, "ran": result.ran, "cached": result.cached, "seconds": result.seconds,
                "node_seconds": result.node_seconds,
                "elements": {n: [c.ran, c.cached] for n, c in result.elements.items()},
                "events": events, "worker": self.name}


def affinity(plan: Plan) -> frozenset[str]:
    """What makes a worker a good choice for `plan`: the files its nodes read (model folders, weights)."""
    return frozenset(f"{pn.type.id}\x00{path}" for pn in plan.nodes.values() for path in pn.read_paths.values())


@dataclass
class _Worker:
    name: str
    actor: Any
    pid: int
    holds: set[str] = field(default_factory=set)
    busy: int = 0


class RayExecutor:
    """Runs workflows on `workers` Ray actors (see the module docstring)."""

    def __init__(self, spec: WorkerSpec | None = None, workers: int = 2, address: str | None = None,
                 cpus_per_worker: float = 1.0, local_session: Session | None = None) -> None:
        ray = import_ray()
        self.ray = ray
        self.spec = spec or WorkerSpec()
        self.session = local_session if local_session is not None else self.spec.session()
        self.owns_runtime = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=max(1, int(workers * cpus_per_worker + 0.999)), include_dashboard=False,
                         object_store_memory=256 << 20, log_to_driver=False)
            self.owns_runtime = True
        self._actor_class = ray.remote(num_cpus=cpus_per_worker, max_concurrency=2, max_restarts=0)(SessionWorker)
        self._names = (f"worker-{i}" for i in itertools.count())
        self._lock = threading.Lock()
        self.workers: list[_Worker] = self._spawn(workers)

    def _spawn(self, count: int = 1) -> list[_Worker]:
        """`count` new actors, started together (each imports torch and the node library: seconds)."""
        names = [next(self._names) for _ in range(count)]
        actors = [self._actor_class.remote(name, self.spec) for name in names]
        pids = self.ray.get([actor.pid.remote() for actor in actors])
        return [_Worker(name, actor, pid) for name, actor, pid in zip(names, actors, pids, strict=True)]

    def worker(self, name: str) -> _Worker:
        return next(w for w in self.workers if w.name == name)

    def _choose(self, wanted: frozenset[str]) -> _Worker:
        with self._lock:
            best = max(self.workers, key=lambda w: (len(w.holds & wanted), -w.busy, -self.workers.index(w)))
            best.busy += 1
            return best

    def _replace(self, dead: _Worker) -> None:
        """A fresh actor in the dead one's place (once, however many runs saw it die)."""
        (fresh,) = self._spawn()
        with self._lock:
            if dead in self.workers:
                self.workers[self.workers.index(dead)] = fresh
                return
        self.ray.kill(fresh.actor)  # another run replaced it first

    def run(self, workflow: Workflow | Plan, outputs: Sequence[str] | None = None, on_event: Subscriber | None = None,
            cancel_token: CancelToken | None = None) -> tuple[RunResult, str]:
        """Run on the best worker; returns the result and the name of the worker that gave it."""
        plan = workflow if isinstance(workflow, Plan) else self.session.compile(workflow)
        text = plan.workflow.to_json()
        wanted = affinity(plan)
        deaths = 0
        while True:
            worker = self._choose(wanted)
            try:
                reply = self._await(worker, worker.actor.run.remote(text, list(outputs) if outputs else None),
                                    cancel_token)
            except self.ray.exceptions.RayActorError:
                deaths += 1
                self._replace(worker)
                if deaths > len(self.workers):
                    raise RuntimeError(f"{deaths} workers died running this workflow; giving up") from None
                continue
            finally:
                with self._lock:
                    worker.busy -= 1
            break
        if on_event is not None:
            for data in reply["events"]:
                on_event(Event.from_dict(data))
        if "failed" in reply:
            node_id, type_id, reason = reply["failed"]
            raise NodeFailed(node_id, type_id, reason)
        if "cancelled" in reply:
            raise RunCancelled(reply["cancelled"])
        with self._lock:
            worker.holds |= wanted
        elements = {n: ElementCounts(ran, cached) for n, (ran, cached) in reply["elements"].items()}
        result = RunResult(reply["outputs"], reply["ran"], reply["cached"], reply["seconds"], reply["node_seconds"],
                           elements)
        return result, reply["worker"]

    def _await(self, worker: _Worker, ref: Any, cancel_token: CancelToken | None) -> dict[str, Any]:
        asked = False
        while True:
            ready, _ = self.ray.wait([ref], timeout=WAIT_SLICE if cancel_token is not None else None)
            if ready:
                return self.ray.get(ref)
            if cancel_token is not None and cancel_token.cancelled and not asked:
                worker.actor.cancel.remote()
                asked = True

    def map(self, workflows: Sequence[Workflow], outputs: Sequence[str] | None = None,
            on_event: Callable[[int, Event], None] | None = None) -> list[tuple[RunResult, str]]:
        """Run every workflow, as many at once as there are workers; results in the order given."""
        def one(index: int) -> tuple[RunResult, str]:
            listener = (lambda event: on_event(index, event)) if on_event is not None else None
            return self.run(workflows[index], outputs, listener)

        with ThreadPoolExecutor(max_workers=len(self.workers), thread_name_prefix="nodegraph-ray") as pool:
            return list(pool.map(one, range(len(workflows))))

    def close(self) -> None:
        """Stop the actors (and the local Ray runtime, when this executor started it)."""
        for worker in self.workers:
            if worker.actor is not None:
                self.ray.kill(worker.actor)
        self.workers = []
        if self.owns_runtime:
            self.ray.shutdown()
