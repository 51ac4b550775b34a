"""The keys of the jobs this user submitted from the CLI, so `requeue ID` works without `--key`.

A job's key is the secret that opens it (the server keeps only its hash). `nodegraph submit` stores it
here, per server URL; `requeue` reads it. The file is private to the user (mode 0600), written
atomically, and keeps the newest `MAX_KEYS` keys per server. Its place: $NODEGRAPH_KEYS_FILE, else
$XDG_STATE_HOME/nodegraph/job-keys.json, else ~/.local/state/nodegraph/job-keys.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write_text

MAX_KEYS = 1000
KEYS_FILE_ENV = "NODEGRAPH_KEYS_FILE"


def keys_file() -> Path:
    chosen = os.environ.get(KEYS_FILE_ENV, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    state = os.environ.get("XDG_STATE_HOME", "").strip() or str(Path.home() / ".local" / "state")
    return Path(state) / "nodegraph" / "job-keys.json"


def _server(url: str) -> str:
    return url.rstrip("/")


def _read(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: start again (a key only saves typing --key)
    if not isinstance(data, dict):
        return {}
    return {server: {str(k): str(v) for k, v in jobs.items()}
            for server, jobs in data.items() if isinstance(jobs, dict)}


def remember(url: str, job: int, key: str, path: Path | None = None) -> None:
    """Keep `key` of `job` on `url` (best effort: a read-only home only loses the convenience)."""
    path = path or keys_file()
    data = _read(path)
    jobs = data.setdefault(_server(url), {})
    jobs[str(job)] = key
    if len(jobs) > MAX_KEYS:
        for old in sorted(jobs, key=int)[:len(jobs) - MAX_KEYS]:
            del jobs[old]
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True), mode=0o600)
    except OSError:
        pass


def recall(url: str, job: int, path: Path | None = None) -> str | None:
    """The key stored for `job` on `url`, if this user submitted it from here."""
    return _read(path or keys_file()).get(_server(url), {}).get(str(job))
