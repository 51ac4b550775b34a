"""Jobs in SQLite: one file `jobs.sqlite3` in the data folder, written by one server process.

Tables (schema version 2):

    schema_version(version)                      one row; 0 when the table is missing (a new file)
    jobs(id, status, name, priority, workflow, overrides, key_hash,
         queued_at, started_at, finished_at, error, error_node, result)
    events(job_id, seq, kind, data)              seq = 0, 1, 2, ... per job; bounded (MAX_EVENTS)
    files(job_id, node, idx, kind, path, media_type)

`workflow` is the effective workflow JSON (overrides applied), `overrides` what the client asked
for, `result` a JSON object {outputs, ran, cached, seconds}. Times are Unix seconds.

Connections are per thread (sqlite3 objects must not be shared between threads while in use), in
WAL mode, so readers never wait for the writer; each write is one statement or one
`BEGIN IMMEDIATE` transaction, so concurrent submits from many threads serialise inside SQLite
(busy timeout 30 s). Committed rows survive the process being killed (synchronous=NORMAL under
WAL loses at most the last transactions on power loss, never on a crash of the process).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

JobStatus = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL: frozenset[str] = frozenset({"done", "failed", "cancelled", "interrupted"})
REQUEUEABLE: frozenset[str] = frozenset({"failed", "cancelled", "interrupted"})

DB_NAME = "jobs.sqlite3"
MAX_EVENTS = 5000
"""Events stored per job; beyond it progress events are dropped (node and run events are always kept)."""

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: jobs and their event logs
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL, name TEXT NOT NULL DEFAULT '',
            workflow TEXT NOT NULL, overrides TEXT NOT NULL DEFAULT '{}', key_hash TEXT NOT NULL,
            queued_at REAL NOT NULL, started_at REAL, finished_at REAL,
            error TEXT NOT NULL DEFAULT '', error_node TEXT, result TEXT NOT NULL DEFAULT '{}')""",
        """CREATE TABLE events (
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, seq INTEGER NOT NULL,
            kind TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID""",
        "CREATE INDEX jobs_status ON jobs(status)",
    ),
    (  # 2: priorities (the queue runs the highest first), and the files each job produced
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        """CREATE TABLE files (
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, node TEXT NOT NULL,
            idx INTEGER NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL, media_type TEXT NOT NULL,
            PRIMARY KEY (job_id, node, idx)) WITHOUT ROWID""",
        "DROP INDEX jobs_status",
        "CREATE INDEX jobs_queue ON jobs(status, priority DESC, id)",
    ),
    (  # 3: which worker ran a job ("local", or a Ray worker's name)
        "ALTER TABLE jobs ADD COLUMN worker TEXT NOT NULL DEFAULT ''",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_JOB_COLUMNS = ("id, status, name, priority, workflow, overrides, key_hash, queued_at, started_at, finished_at, "
                "error, error_node, result, worker")


class StoreError(RuntimeError):
    """The jobs database cannot be used (written by a newer nodegraph, or not a database)."""


@dataclass(frozen=True)
class OutputFile:
    """A file a job produced: `kind` "preview" (an image the server rendered, kept in the data folder
    and deleted with the job) or "saved" (written by a node into the output folder)."""

    node: str
    index: int
    kind: Literal["preview", "saved"]
    path: str
    media_type: str


@dataclass
class Job:
    id: int
    status: JobStatus
    name: str
    priority: int
    workflow: dict[str, Any]
    overrides: dict[str, Any]
    key_hash: str
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""
    error_node: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    files: list[OutputFile] = field(default_factory=list)
    worker: str = ""
    """Who ran it: "local" (the server's own Session) or a Ray worker's name; empty until it ran."""

    @property
    def seconds(self) -> float | None:
        """Time from start to finish (None until both happened)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)


def _job(row: tuple) -> Job:
    (job_id, status, name, priority, workflow, overrides, key_hash, queued_at, started_at, finished_at,
     error, error_node, result, worker) = row
    return Job(job_id, status, name, priority, json.loads(workflow), json.loads(overrides), key_hash, queued_at,
               started_at, finished_at, error, error_node, json.loads(result), worker=worker)


def _append(conn: sqlite3.Connection, job_id: int, data: dict[str, Any]) -> int | None:
    kind = str(data.get("kind", ""))
    row = conn.execute(
        "INSERT INTO events (job_id, seq, kind, data) SELECT ?, COALESCE(MAX(seq) + 1, 0), ?, ? FROM events "
        "WHERE job_id = ? HAVING ? != 'progress' OR COALESCE(MAX(seq) + 1, 0) < ? RETURNING seq",
        (job_id, kind, json.dumps(data), job_id, kind, MAX_EVENTS)).fetchone()
    return None if row is None else row[0]


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the database; 0 for a file without the version table."""
    found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if found is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, migrations: tuple[tuple[str, ...], ...] = MIGRATIONS) -> tuple[int, int]:
    """Bring the database forward to `len(migrations)` in one transaction; returns (from, to).

    Two processes opening the same new file at once: `BEGIN IMMEDIATE` makes the second wait, and
    it then reads the version the first one wrote, so no migration runs twice."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        before = schema_version(conn)
        if before > len(migrations):
            raise StoreError(f"the jobs database has schema version {before}; this nodegraph knows versions up to "
                             f"{len(migrations)} (use a newer nodegraph, or another --data-dir)")
        if before == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (0)")
        for statements in migrations[before:]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (len(migrations),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return before, len(migrations)


class JobStore:
    """The jobs database of one data folder. Thread-safe: every thread gets its own connection."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode = WAL")
            self.migrated_from, _ = migrate(conn)
        except sqlite3.DatabaseError as err:
            self.close()
            raise StoreError(f"{self.path}: {err}") from None
        except StoreError:
            self.close()
            raise

    # connections --------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise StoreError(f"the job store {self.path} is closed")
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (the store cannot be used afterwards)."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def journal_mode(self) -> str:
        return self._conn().execute("PRAGMA journal_mode").fetchone()[0]

    # jobs ---------------------------------------------------------------------------------------
    def add(self, workflow: dict[str, Any], overrides: dict[str, Any], key_hash: str, *, name: str = "",
            priority: int = 0) -> Job:
        now = time.time()
        cursor = self._conn().execute(
            "INSERT INTO jobs (status, name, priority, workflow, overrides, key_hash, queued_at) "
            f"VALUES ('queued', ?, ?, ?, ?, ?, ?) RETURNING {_JOB_COLUMNS}",
            (name, priority, json.dumps(workflow, sort_keys=True), json.dumps(overrides, sort_keys=True),
             key_hash, now))
        return _job(cursor.fetchone())

    def get(self, job_id: int, *, files: bool = True) -> Job | None:
        row = self._conn().execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = _job(row)
        if files:
            job.files = self.files(job_id)
        return job

    def status(self, job_id: int) -> JobStatus | None:
        row = self._conn().execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def list(self, statuses: Iterable[str] = (), *, limit: int = 50, before: int | None = None,
             ) -> tuple[list[Job], int]:
        """Newest first: up to `limit` jobs with id < `before`, and how many match in all."""
        wanted = list(dict.fromkeys(statuses))
        where, args = [], []
        if wanted:
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            args += wanted
        total = self._conn().execute("SELECT COUNT(*) FROM jobs" + (" WHERE " + where[0] if where else ""),
                                     args).fetchone()[0]
        if before is not None:
            where.append("id < ?")
            args.append(before)
        clause = " WHERE " + " AND ".join(where) if where else ""
        rows = self._conn().execute(f"SELECT {_JOB_COLUMNS} FROM jobs{clause} ORDER BY id DESC LIMIT ?",
                                    [*args, limit]).fetchall()
        return [_job(row) for row in rows], total

    def claim_next(self) -> Job | None:
        """Mark the next queued job (highest priority, then oldest) running and return it; atomic."""
        row = self._conn().execute(
            "UPDATE jobs SET status = 'running', started_at = ? WHERE id = (SELECT id FROM jobs "
            f"WHERE status = 'queued' ORDER BY priority DESC, id LIMIT 1) RETURNING {_JOB_COLUMNS}",
            (time.time(),)).fetchone()
        return None if row is None else _job(row)

    def finish(self, job_id: int, status: JobStatus, *, error: str = "", error_node: str | None = None,
               result: dict[str, Any] | None = None, files: Iterable[OutputFile] = (), worker: str = "") -> None:
        """Record the end of a running job, and its last event `{"kind": "finished", "status": ...}`."""
        with self._transaction() as conn:
            conn.execute("UPDATE jobs SET status = ?, finished_at = ?, error = ?, error_node = ?, result = ?, "
                         "worker = ? WHERE id = ?",
                         (status, time.time(), error, error_node, json.dumps(result or {}), worker, job_id))
            conn.executemany("INSERT INTO files (job_id, node, idx, kind, path, media_type) VALUES (?, ?, ?, ?, ?, ?)",
                             [(job_id, f.node, f.index, f.kind, f.path, f.media_type) for f in files])
            _append(conn, job_id, {"kind": "finished", "status": status})

    def cancel_queued(self, job_id: int) -> bool:
        """Cancel a job that has not started; False when it is not queued (any more)."""
        with self._transaction() as conn:
            cursor = conn.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? "
                                  "WHERE id = ? AND status = 'queued'", (time.time(), job_id))
            if cursor.rowcount != 1:
                return False
            _append(conn, job_id, {"kind": "finished", "status": "cancelled"})
        return True

    def interrupt_running(self) -> list[int]:
        """At start: jobs still marked running belonged to a process that died; mark them interrupted."""
        with self._transaction() as conn:
            rows = conn.execute("UPDATE jobs SET status = 'interrupted', finished_at = ?, "
                                "error = 'the server stopped while this job ran' "
                                "WHERE status = 'running' RETURNING id", (time.time(),)).fetchall()
            for (job_id,) in rows:
                _append(conn, job_id, {"kind": "finished", "status": "interrupted"})
        return sorted(row[0] for row in rows)

    def requeue(self, job_id: int) -> list[OutputFile] | None:
        """Put a failed, cancelled or interrupted job back in the queue, its last attempt forgotten
        (events, result, file records). Returns the forgotten files, or None when it may not be requeued."""
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in REQUEUEABLE:
                return None
            forgotten = self._files(conn, job_id)
            conn.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM files WHERE job_id = ?", (job_id,))
            conn.execute("UPDATE jobs SET status = 'queued', queued_at = ?, started_at = NULL, finished_at = NULL, "
                         "error = '', error_node = NULL, result = '{}', worker = '' WHERE id = ?",
                         (time.time(), job_id))
        return forgotten

    def delete(self, job_id: int) -> Job | None:
        """Remove a job that is not running, with its events and file records; returns it (with its files)."""
        with self._transaction() as conn:
            job = self.get(job_id)
            if job is None or job.status == "running":
                return None
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return job

    # events and files ---------------------------------------------------------------------------
    def append_event(self, job_id: int, data: dict[str, Any]) -> int | None:
        """Store an event as the job's next one; returns its seq, or None when a progress event was
        dropped because the job has MAX_EVENTS already."""
        return _append(self._conn(), job_id, data)

    def events(self, job_id: int, since: int = 0, limit: int = 1000) -> list[tuple[int, dict[str, Any]]]:
        rows = self._conn().execute("SELECT seq, data FROM events WHERE job_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
                                    (job_id, since, limit)).fetchall()
        return [(seq, json.loads(data)) for seq, data in rows]

    def files(self, job_id: int) -> list[OutputFile]:
        return self._files(self._conn(), job_id)

    @staticmethod
    def _files(conn: sqlite3.Connection, job_id: int) -> list[OutputFile]:
        rows = conn.execute("SELECT node, idx, kind, path, media_type FROM files WHERE job_id = ? ORDER BY node, idx",
                            (job_id,)).fetchall()
        return [OutputFile(*row) for row in rows]
