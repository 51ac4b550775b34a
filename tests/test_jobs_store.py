"""The jobs store (SQLite): schema and migrations, WAL, atomic claims, bounded events, and a server
process killed with SIGKILL mid-job: after a restart the finished job is there, the running one is
interrupted (and can be requeued), the queued one runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.error import URLError

import pytest

from nodegraph import Session
from nodegraph.client import Client
from nodegraph.jobs import SCHEMA_VERSION, JobQueue, JobStore, OutputFile, StoreError
from nodegraph.jobs import store as store_module
from nodegraph.jobs.store import MIGRATIONS, migrate, schema_version
from ui.serve import free_port

from .job_nodes import PLUGIN_SOURCE, blocking, quick

WORKFLOW = {"format": "nodegraph/workflow", "version": 1, "name": "w", "nodes": {}}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_store_is_wal_at_the_latest_schema(tmp_path):
    store = JobStore(tmp_path / "data")
    try:
        assert store.migrated_from == 0 and SCHEMA_VERSION == len(MIGRATIONS) == 3
        assert store.journal_mode() == "wal"
        assert {"schema_version", "jobs", "events", "files"} <= tables(store.path)
        job = store.add(WORKFLOW, {"a.b": 1}, "hash", name="w", priority=3)
        assert (job.id, job.status, job.priority, job.overrides) == (1, "queued", 3, {"a.b": 1})
    finally:
        store.close()
    with sqlite3.connect(store.path) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
    reopened = JobStore(tmp_path / "data")  # opening again migrates nothing and keeps the rows
    assert reopened.migrated_from == SCHEMA_VERSION and reopened.get(1).name == "w"
    reopened.close()


def test_a_version_0_file_is_migrated_from_scratch(tmp_path):
    """A database file without the version table (an empty file, or one with unrelated tables) is version 0."""
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / store_module.DB_NAME) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    store = JobStore(tmp_path / "data")
    assert store.migrated_from == 0 and {"notes", "jobs", "events", "files"} <= tables(store.path)
    store.close()


def test_a_version_1_database_migrates_forward_keeping_its_jobs(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    conn = sqlite3.connect(folder / store_module.DB_NAME, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == (0, 1)  # the layout of version 1: no priority, no files table
    conn.execute("INSERT INTO jobs (status, name, workflow, key_hash, queued_at, result) VALUES "
                 "('done', 'old', ?, 'h', 1.0, ?)", (json.dumps(WORKFLOW), json.dumps({"ran": ["x"]})))
    conn.execute("INSERT INTO jobs (status, name, workflow, key_hash, queued_at) VALUES "
                 "('queued', 'next', ?, 'h', 2.0)", (json.dumps(WORKFLOW),))
    conn.execute("INSERT INTO events VALUES (1, 0, 'run_start', '{\"kind\": \"run_start\"}')")
    assert "files" not in tables(folder / store_module.DB_NAME)
    conn.close()

    store = JobStore(folder)
    try:
        assert store.migrated_from == 1
        old = store.get(1)
        assert (old.name, old.status, old.priority, old.result, old.files) == ("old", "done", 0, {"ran": ["x"]}, [])
        assert old.worker == ""  # version 3's column, empty for jobs run before it
        assert store.events(1) == [(0, {"kind": "run_start"})]
        urgent = store.add(WORKFLOW, {}, "h", priority=5)
        assert store.claim_next().id == urgent.id  # the new column orders the queue
        assert store.claim_next().name == "next"
        store.finish(urgent.id, "done", worker="worker-1")
        assert store.get(urgent.id).worker == "worker-1"
    finally:
        store.close()


def test_a_newer_schema_or_a_non_database_is_refused(tmp_path):
    newer = tmp_path / "newer"
    JobStore(newer).close()
    with sqlite3.connect(newer / store_module.DB_NAME) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        JobStore(newer)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / store_module.DB_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a database"):
        JobStore(garbage)


def test_claims_follow_priority_then_age_and_each_job_is_claimed_once(tmp_path):
    store = JobStore(tmp_path)
    ids = [store.add(WORKFLOW, {}, "h", priority=p).id for p in (0, 5, 0, 5, -1)]
    claimed: list[int] = []
    lock = threading.Lock()

    def claim() -> None:
        while (job := store.claim_next()) is not None:
            with lock:
                claimed.append(job.id)

    workers = [threading.Thread(target=claim) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(claimed) == sorted(ids)  # each exactly once across threads
    again = JobStore(tmp_path / "second")
    order = [again.add(WORKFLOW, {}, "h", priority=p).id for p in (0, 5, 0, 5, -1)]
    assert [again.claim_next().id for _ in order] == [order[1], order[3], order[0], order[2], order[4]]
    store.close()
    again.close()


def test_cancel_requeue_delete_and_their_states(tmp_path):
    store = JobStore(tmp_path)
    queued = store.add(WORKFLOW, {}, "h")
    running = store.add(WORKFLOW, {}, "h")
    assert store.claim_next().id == queued.id and store.claim_next().id == running.id
    store.finish(queued.id, "failed", error="x", files=[OutputFile("n", 0, "preview", "/p.png", "image/png")])
    assert store.events(queued.id) == [(0, {"kind": "finished", "status": "failed"})]
    assert store.delete(running.id) is None  # running: not deleted
    assert store.requeue(running.id) is None  # running: not requeued
    assert [f.path for f in store.requeue(queued.id)] == ["/p.png"]  # forgotten with the attempt
    again = store.get(queued.id)
    assert (again.status, again.error, again.files, again.started_at) == ("queued", "", [], None)
    assert store.events(queued.id) == []
    assert store.cancel_queued(queued.id) and not store.cancel_queued(queued.id)
    assert store.events(queued.id) == [(0, {"kind": "finished", "status": "cancelled"})]
    assert store.interrupt_running() == [running.id]
    assert store.get(running.id).status == "interrupted"
    assert store.delete(queued.id).id == queued.id and store.get(queued.id) is None
    assert store.events(queued.id) == []  # cascaded
    store.close()


def test_events_are_bounded_but_never_lose_node_or_final_events(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_EVENTS", 5)
    store = JobStore(tmp_path)
    job = store.add(WORKFLOW, {}, "h")
    seqs = [store.append_event(job.id, {"kind": "progress", "step": i}) for i in range(8)]
    assert seqs == [0, 1, 2, 3, 4, None, None, None]
    assert store.append_event(job.id, {"kind": "node_done", "node": "n"}) == 5
    store.claim_next()
    store.finish(job.id, "done")
    assert [e["kind"] for _, e in store.events(job.id)][-2:] == ["node_done", "finished"]
    assert [seq for seq, _ in store.events(job.id, since=4)] == [4, 5, 6]
    store.close()


def test_one_queue_per_data_folder(tmp_path, builtin_registry):
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out")
    first = JobQueue(session, JobStore(tmp_path / "data")).start()
    second = JobQueue(session, JobStore(tmp_path / "data"))
    try:
        with pytest.raises(StoreError, match="another nodegraph server"):
            second.start()
    finally:
        assert first.stop(30)
    second.start()  # the lock went with the first queue
    assert second.stop(30)
    first.store.close()
    second.store.close()


# -- a server process killed mid-job --------------------------------------------------------------

def start_server(folder: Path, port: int) -> tuple[subprocess.Popen, Path]:
    log = folder / f"server-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NODEGRAPH_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "nodegraph.cli", "serve", "--port", str(port), "--data-dir", str(folder / "data"),
             "--plugins-dir", str(folder / "plugins"), "--out", str(folder / "out")],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, log


def wait_ready(process: subprocess.Popen, client: Client, log: Path, timeout: float = 300) -> None:
    """Ask the API until it answers; between tries, wait on the process itself (it must not exit)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.history(limit=1)
            return
        except (URLError, ConnectionError):
            assert time.monotonic() < deadline, log.read_text()
        try:
            code = process.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"the server exited with {code}:\n{log.read_text()}")


def until_running(client: Client, job: int, timeout: float = 120) -> None:
    """Follow the job's event stream until its blocking node has started."""
    for event in client.events(job, timeout=timeout):
        if event["kind"] == "progress" and event.get("node") == "hold":
            return
        assert event["kind"] != "finished", event


def test_sigkill_mid_job_then_restart_keeps_history_and_runs_the_queue(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "hold.py").write_text(PLUGIN_SOURCE)
    port = free_port()
    server, log = start_server(tmp_path, port)
    client = Client(f"http://127.0.0.1:{port}", timeout=60)
    try:
        wait_ready(server, client, log)
        finished = client.submit(quick(1, "finished"))
        assert client.wait(finished, timeout=120)["status"] == "done"
        held = client.submit(blocking("hold/until_cancelled"))
        waiting = client.submit(quick(2, "waiting"))
        until_running(client, held)
        assert [j["status"] for j in client.history()["jobs"]] == ["queued", "running", "done"]
        server.send_signal(signal.SIGKILL)  # no shutdown code runs: as if the machine lost the process
        assert server.wait(60) == -signal.SIGKILL
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(60)

    port = free_port()
    restarted, log = start_server(tmp_path, port)
    client = Client(f"http://127.0.0.1:{port}", keys=client.keys, timeout=60)
    try:
        wait_ready(restarted, client, log)
        assert client.wait(waiting, timeout=120)["status"] == "done"  # the queued job ran after the restart
        history = {j["id"]: j for j in client.history()["jobs"]}
        assert history[finished]["status"] == "done" and history[held]["status"] == "interrupted"
        assert "stopped while this job ran" in history[held]["error"]
        assert [e["kind"] for e in client.events(held)][-1] == "finished"
        assert client.get(finished)["outputs"]["seed"]["int"] == 1  # its results survived the kill
        assert client.requeue(held)["status"] in ("queued", "running")  # the interrupted one can run again
        until_running(client, held)
        assert client.cancel(held) is True
        assert client.wait(held, timeout=60)["status"] == "cancelled"
        restarted.send_signal(signal.SIGINT)  # a clean stop this time
        assert restarted.wait(60) == 0, log.read_text()
        assert f"interrupted when the server last stopped: {held}" in log.read_text()
    finally:
        if restarted.poll() is None:
            restarted.kill()
            restarted.wait(60)


def test_job_keys_never_start_with_a_dash():
    """`nodegraph requeue ID --key KEY` must parse: argparse would read a leading "-" as an option."""
    from nodegraph.jobs.queue import new_key

    assert not any(new_key().startswith("-") for _ in range(2000))
