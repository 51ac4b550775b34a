"""The job queue: jobs from any number of clients, run one after another on one Session.

One worker thread takes the next queued job (highest priority, then oldest) from the store, runs it
on the server's Session (so loaded models and every cached output stay warm between jobs), stores
its events as they happen and its outputs at the end. Clients submit, cancel, requeue and delete
from any thread; the store serialises their writes.

Restart: at `start`, jobs the store still marks running belonged to a process that died; they
become `interrupted` (and may be requeued), and the queued ones run. One process per data folder:
`start` takes an exclusive lock on `queue.lock` there.

Ownership: a job's key (a random secret) goes back to the client that submitted it, and only its
hash is stored; `opens(job, key)` checks one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import shutil
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..context import CancelToken
from ..events import Event
from ..session import NodeFailed, RunCancelled, Session
from ..validate import Problem, WorkflowInvalid
from ..workflow import Workflow, WorkflowFormatError
from .changes import Changes
from .outputs import OutputRecorder, inside
from .store import FINAL, Job, JobStatus, JobStore, StoreError

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock on the data folder
    fcntl = None  # type: ignore[assignment]

PRIORITY_RANGE = (-1000, 1000)


class JobRejected(ValueError):
    """A workflow that cannot be queued; nothing was stored. Every problem names its node and input."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class JobBusy(RuntimeError):
    """The job is running: cancel it first."""


@dataclass
class Deleted:
    job: Job
    files_deleted: list[str] = field(default_factory=list)
    files_kept: list[str] = field(default_factory=list)


def new_key() -> str:
    """A job's secret. Never starting with "-", so `nodegraph requeue ID --key KEY` parses as written."""
    while True:
        key = secrets.token_urlsafe(18)
        if not key.startswith("-"):
            return key


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def opens(job: Job, key: str | None) -> bool:
    """Whether `key` is the secret of `job` (constant-time)."""
    return key is not None and hmac.compare_digest(hash_key(key), job.key_hash)


def apply_overrides(workflow: Workflow, overrides: dict[str, Any]) -> tuple[Workflow, list[Problem]]:
    """A copy of `workflow` with `{"node.input": value}` set (Workflow.set); a bad address is a problem."""
    result = workflow.copy_deep()
    problems = []
    for address, value in overrides.items():
        node_id, _, input_name = address.rpartition(".")
        try:
            result.set(address, value)
        except (KeyError, ValueError) as err:
            known = node_id in workflow.nodes
            problems.append(Problem("bad_override", str(err.args[0] if err.args else err),
                                    node_id if known else None, input_name if known else None))
    return result, problems


class JobQueue:
    """Jobs from the store, run by `workers` threads: on the server's Session, or through an `executor`
    (`nodegraph.ray_executor.RayExecutor`: each thread hands its job to a Ray worker, so as many jobs run
    at once as there are threads). Every job records who ran it (`Job.worker`)."""

    def __init__(self, session: Session, store: JobStore, recorder: OutputRecorder | None = None, *,
                 executor: Any = None, workers: int = 1) -> None:
        self.session, self.store = session, store
        self.executor = executor
        self.workers = max(1, workers)
        self.recorder = recorder if recorder is not None else OutputRecorder()
        self.previews_dir = store.data_dir / "previews"
        self.changes = Changes()
        self.interrupted: list[int] = []
        """Jobs that `start` found marked running (their process died) and marked interrupted."""
        self._lock = threading.Lock()  # claiming a job vs cancelling it
        self._running: dict[int, CancelToken] = {}
        self._previews: dict[int, bytes] = {}
        self._work = threading.Event()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._lock_file: IO[bytes] | None = None

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> JobQueue:
        """Lock the data folder, mark jobs of a dead process interrupted, start the worker."""
        self._lock_data_folder()
        self.interrupted = self.store.interrupt_running()
        self._threads = [threading.Thread(target=self._work_loop, daemon=True, name=f"nodegraph-jobs-{i}")
                         for i in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop taking jobs; a running job is cancelled and marked interrupted (it may be requeued).
        True when the worker ended within `timeout`."""
        self._stopping = True
        with self._lock:
            for token in self._running.values():
                token.cancel()
        self._work.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        ended = not any(thread.is_alive() for thread in self._threads)
        if ended and self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
        self.changes.bump()
        return ended

    def _lock_data_folder(self) -> None:
        if fcntl is None:
            return
        handle = (self.store.data_dir / "queue.lock").open("wb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreError(f"another nodegraph server is using the data folder {self.store.data_dir} "
                             "(stop it, or pass another --data-dir)") from None
        self._lock_file = handle

    # clients ------------------------------------------------------------------------------------
    def submit(self, workflow: Workflow, overrides: dict[str, Any] | None = None, *,
               priority: int = 0) -> tuple[Job, str]:
        """Validate (overrides applied) and queue; returns the job and its key. JobRejected on a problem."""
        effective, problems = apply_overrides(workflow, overrides or {})
        try:
            self.session.compile(effective)  # every problem at once: those of the overrides and the graph's
        except WorkflowInvalid as err:
            problems += err.problems
        low, high = PRIORITY_RANGE
        if not low <= priority <= high:
            problems.append(Problem("bad_value", f"priority {priority} is not between {low} and {high}"))
        if problems:
            raise JobRejected(problems)
        key = new_key()
        job = self.store.add(effective.to_dict(), dict(overrides or {}), hash_key(key), name=effective.name,
                             priority=priority)
        self._work.set()
        self.changes.bump()
        return job, key

    def get(self, job_id: int) -> Job | None:
        return self.store.get(job_id)

    def history(self, statuses: list[str] | tuple[str, ...] = (), *, limit: int = 50,
                before: int | None = None) -> tuple[list[Job], int]:
        return self.store.list(statuses, limit=limit, before=before)

    def events(self, job_id: int, since: int = 0, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        return self.store.events(job_id, since, limit)

    def preview(self, job_id: int) -> bytes | None:
        """The latest progress preview (PNG) of the running job."""
        return self._previews.get(job_id)

    def cancel(self, job_id: int) -> bool:
        """Cancel a queued job (it never starts) or the running one (it stops at its next node boundary
        or progress report). False when the job is neither."""
        with self._lock:
            if self.store.cancel_queued(job_id):
                found = True
            elif job_id in self._running:
                self._running[job_id].cancel()
                found = True
            else:
                found = False
        if found:
            self.changes.bump()
        return found

    def requeue(self, job_id: int) -> Job | None:
        """Queue a failed, cancelled or interrupted job again (same id and key); None when it may not be."""
        if self.store.requeue(job_id) is None:
            return None
        self._remove_previews(job_id)
        self._work.set()
        self.changes.bump()
        return self.store.get(job_id)

    def delete(self, job_id: int, delete_files: bool = False) -> Deleted | None:
        """Forget a job that is not running (None: no such job; JobBusy: running). Its preview images go
        with it; files its nodes saved are deleted only with `delete_files`, and only inside the
        output folder."""
        job = self.store.delete(job_id)
        if job is None:
            if self.store.status(job_id) is not None:
                raise JobBusy(f"job {job_id} is running; cancel it first")
            return None
        self._remove_previews(job_id)
        result = Deleted(job)
        for item in job.files:
            if item.kind != "saved":
                continue
            path = Path(item.path)
            if delete_files and inside(path, self.session.output_dir):
                path.resolve().unlink(missing_ok=True)
                result.files_deleted.append(item.path)
            else:
                result.files_kept.append(item.path)
        self.changes.bump()
        return result

    def wait(self, job_id: int, timeout: float | None = None) -> Job | None:
        """Block until the job has finished (or `timeout`); returns it as it is then (None: deleted)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            seen = self.changes.version
            job = self.store.get(job_id, files=False)
            if job is None or job.status in FINAL:
                return self.store.get(job_id)
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return job
            self.changes.wait(seen, remaining)

    def _remove_previews(self, job_id: int) -> None:
        shutil.rmtree(self.previews_dir / str(job_id), ignore_errors=True)

    # the worker ---------------------------------------------------------------------------------
    def _work_loop(self) -> None:
        while not self._stopping:
            self._work.clear()
            token = CancelToken()
            with self._lock:
                job = None if self._stopping else self.store.claim_next()
                if job is not None:
                    self._running[job.id] = token
            if job is None:
                self._work.wait()
                continue
            self._work.set()  # another thread may take the next queued job meanwhile
            self.changes.bump()
            try:
                self._execute(job, token)
            except Exception:  # noqa: BLE001 - e.g. the database refused the result: the queue goes on
                print(f"nodegraph: job {job.id} could not be recorded:", file=sys.stderr)
                traceback.print_exc()
            finally:
                with self._lock:
                    self._running.pop(job.id, None)
                    self._previews.pop(job.id, None)
                self.changes.bump()

    def _record_event(self, job_id: int, event: Event) -> None:
        data = event.as_dict()
        data.pop("run_id", None)
        if event.kind == "progress" and event.info.get("preview") is not None:
            png = self.recorder.preview(event.info["preview"])
            if png is not None:
                self._previews[job_id] = png
                data["preview"] = True
        if self.store.append_event(job_id, data) is not None:
            self.changes.bump()

    def _execute(self, job: Job, token: CancelToken) -> None:
        status: JobStatus = "done"
        error, error_node, result, files, worker = "", None, {}, [], ""
        try:
            workflow = Workflow.from_dict(job.workflow)
            plan = self.session.compile(workflow)
            targets = self.recorder.targets(plan)
            listener = lambda event: self._record_event(job.id, event)  # noqa: E731
            if self.executor is not None:
                run, worker = self.executor.run(plan, outputs=targets, on_event=listener, cancel_token=token)
            else:
                run, worker = self.session.run(plan, outputs=targets, cancel_token=token, on_event=listener), "local"
            outputs, files = self.recorder.record(self.session, plan, run.outputs, self.previews_dir / str(job.id))
            result = {"outputs": outputs, "ran": run.ran, "cached": run.cached, "seconds": run.seconds}
        except RunCancelled as err:
            status, error = ("interrupted" if self._stopping else "cancelled"), str(err)
        except NodeFailed as err:
            status, error, error_node = "failed", str(err), err.node_id
        except (WorkflowInvalid, WorkflowFormatError) as err:  # e.g. a file it reads vanished since submit
            status, error = "failed", str(err)
        except Exception as err:  # noqa: BLE001 - whatever happens, the job ends with the reason recorded
            status, error = "failed", f"{type(err).__name__}: {err}"
        self.store.finish(job.id, status, error=error, error_node=error_node, result=result, files=files,
                          worker=worker)
