"""A small client for the jobs API of `nodegraph serve` and `nodegraph ui` (standard library only).

    from nodegraph.client import Client

    client = Client("http://127.0.0.1:7860", token=None)
    job = client.submit("workflows/default.json", {"sampler.steps": 20})
    final = client.wait(job, on_event=print)          # follows the job's event stream
    print(final["status"], final["outputs"])
    png = client.output(job, "show", 0)               # bytes of an output file

`submit` remembers each job's key (the secret that opens it), so the same Client can follow, read,
cancel, requeue and delete its jobs; a client with the server's token may act on every job, and one
given `keys={id: key}` on those jobs. Errors from the server raise `ApiError` (status, detail).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen


class ApiError(Exception):
    """An error answer: `status` (HTTP), `detail` (the server's message or {message, problems})."""

    def __init__(self, status: int, detail: Any) -> None:
        self.status, self.detail = status, detail
        super().__init__(f"{status}: {self.message}")

    @property
    def message(self) -> str:
        if isinstance(self.detail, dict):
            return str(self.detail.get("message", self.detail))
        return str(self.detail)

    @property
    def problems(self) -> list[dict[str, Any]]:
        """The validation problems of a rejected workflow (422), each with kind, message, node, input."""
        return list(self.detail.get("problems", [])) if isinstance(self.detail, dict) else []


def workflow_data(workflow: Any) -> dict[str, Any]:
    """A workflow as the API takes it: a dict, a path to a workflow file, or an object with `to_dict()`."""
    if isinstance(workflow, dict):
        return workflow
    if isinstance(workflow, (str, os.PathLike)):
        return json.loads(Path(workflow).read_text(encoding="utf-8"))
    return workflow.to_dict()


class Client:
    def __init__(self, url: str, token: str | None = None, *, keys: dict[int, str] | None = None,
                 timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.keys: dict[int, str] = dict(keys or {})
        self.timeout = timeout

    # transport ----------------------------------------------------------------------------------
    def _open(self, method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None,
              job: int | None = None, headers: dict[str, str] | None = None):
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if job is not None and job in self.keys:
            sent["X-Job-Key"] = self.keys[job]
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + ("?" + urlencode(query, doseq=True) if query else "")
        try:
            return urlopen(Request(url, data=data, method=method, headers=sent), timeout=self.timeout)
        except HTTPError as err:
            with err:
                raw = err.read()
            try:
                detail = json.loads(raw).get("detail", raw.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw.decode(errors="replace") or err.reason
            raise ApiError(err.code, detail) from None

    def _json(self, method: str, path: str, **options: Any) -> Any:
        with self._open(method, path, **options) as response:
            return json.loads(response.read())

    # jobs ---------------------------------------------------------------------------------------
    def submit(self, workflow: Any, overrides: dict[str, Any] | None = None, *, priority: int = 0) -> int:
        """Queue a workflow (dict, file path or Workflow) with `{"node.input": value}` overrides; returns
        the job id. A rejected workflow raises ApiError 422 whose `problems` name node and input."""
        answer = self._json("POST", "/api/jobs", body={"workflow": workflow_data(workflow),
                                                       "overrides": overrides or {}, "priority": priority})
        self.keys[answer["id"]] = answer["key"]
        return answer["id"]

    def get(self, job: int) -> dict[str, Any]:
        """The job: status, timings, error, workflow (as it ran), output summaries, files."""
        return self._json("GET", f"/api/jobs/{job}", job=job)

    def events(self, job: int, since: int = 0, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """The job's events from `since` on, as they happen, ending with the `finished` event. A dropped
        stream is resumed where it stopped; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        position = since
        while True:
            with self._open("GET", f"/api/jobs/{job}/events", query={"since": position}, job=job,
                            headers={"Accept": "text/event-stream"}) as stream:
                data: list[str] = []
                for raw in stream:
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job} did not finish within {timeout} s")
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if line.startswith("id:"):
                        position = int(line[3:].strip()) + 1
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line and data:
                        event = json.loads("\n".join(data))
                        data = []
                        yield event
                        if event.get("kind") == "finished":
                            return

    def wait(self, job: int, timeout: float | None = None,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Follow the job until it ends (calling `on_event` for each event); returns `get(job)`."""
        for event in self.events(job, timeout=timeout):
            if on_event is not None:
                on_event(event)
        return self.get(job)

    def cancel(self, job: int) -> bool:
        return self._json("POST", f"/api/jobs/{job}/cancel", job=job)["cancelled"]

    def requeue(self, job: int) -> dict[str, Any]:
        return self._json("POST", f"/api/jobs/{job}/requeue", job=job)

    def delete(self, job: int, delete_files: bool = False) -> dict[str, Any]:
        return self._json("DELETE", f"/api/jobs/{job}", query={"delete_files": str(delete_files).lower()}, job=job)

    def history(self, status: str | list[str] | None = None, *, limit: int = 50,
                before: int | None = None) -> dict[str, Any]:
        """A page of jobs, newest first: {"jobs": [...], "total": n, "next_before": id or None}."""
        statuses = [status] if isinstance(status, str) else status
        return self._json("GET", "/api/jobs", query={"status": statuses or None, "limit": limit, "before": before})

    def outputs(self, job: int) -> list[dict[str, Any]]:
        """The job's files: node, index, kind (preview or saved), name, media_type, url."""
        return self.get(job)["files"]

    def output(self, job: int, node: str, index: int = 0) -> bytes:
        with self._open("GET", f"/api/jobs/{job}/outputs/{quote(node, safe='')}/{index}", job=job) as response:
            return response.read()
