"""Runs started from the browser: one at a time, in a thread, with an event log the page polls.

The browser posts a workflow, gets a run id back at once, then asks for `events[since:]` until
the run is done. IMAGE outputs of the output nodes become PNG bytes kept in memory for the page.
"""

from __future__ import annotations

import hmac
import io
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from nodegraph import CancelToken, Event, NodeFailed, RunCancelled, Session, Workflow, WorkflowInvalid
from nodegraph.validate import Plan, Problem

MAX_EVENTS = 20_000
"""Events kept per run; beyond it, progress events are dropped (the last one per node still shows)."""


def png_bytes(images: Any) -> list[bytes]:
    """A (B, C, H, W) tensor in [0, 1] (or (C, H, W)) to one PNG per image."""
    from nodes.image_io import tensor_to_pil

    pngs = []
    for image in tensor_to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def summarize(value: Any) -> Any:
    """A short JSON description of an output value (tensors by shape and range)."""
    if type(value).__name__ in ("Tensor", "Parameter"):
        info: dict[str, Any] = {"kind": "tensor", "shape": list(value.shape),
                                "dtype": str(value.dtype).removeprefix("torch.")}
        if value.numel() and value.is_floating_point():
            info["min"], info["max"] = float(value.min()), float(value.max())
        return info
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        return [summarize(v) for v in value]
    text = repr(value)
    return {"kind": type(value).__name__, "repr": text if len(text) <= 200 else text[:197] + "..."}


def is_image_output(socket_lineage: list[str], value: Any) -> bool:
    return "IMAGE" in socket_lineage and type(value).__name__ == "Tensor" and value.dim() in (3, 4)


def display_targets(plan: Plan) -> list[str]:
    """The plan's output nodes, plus the IMAGE sources of side-effect outputs (so saved images show too)."""
    targets = plan.output_nodes()
    extra: list[str] = []
    for node_id in targets:
        pn = plan.nodes[node_id]
        if not pn.type.side_effect:
            continue
        for source, output in pn.links.values():
            socket = plan.nodes[source].type.outputs[output].socket
            if "IMAGE" in socket.lineage() and source not in targets and source not in extra:
                extra.append(source)
    return targets + extra


def problems_of(workflow: Workflow, session: Session) -> list[Problem]:
    """Every problem of `workflow`, its paths checked against the session's own roots."""
    try:
        session.compile(workflow)
    except WorkflowInvalid as err:
        return err.problems
    return []


@dataclass
class RunRecord:
    id: int
    key: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    """The run's secret, returned only to the client that started it; needed to read or cancel the run."""
    token: CancelToken = field(default_factory=CancelToken, repr=False)
    """Cancels this run only (not a run the Gradio endpoint started on the same session)."""
    status: str = "running"  # running | ok | failed | cancelled
    events: list[dict[str, Any]] = field(default_factory=list)
    images: dict[str, list[bytes]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: str = ""
    error_node: str | None = None
    preview: bytes | None = None
    seconds: float = 0.0

    def opens_with(self, key: str | None) -> bool:
        return key is not None and hmac.compare_digest(key.encode("utf-8", "surrogateescape"), self.key.encode())

    def summary(self) -> dict[str, Any]:
        return {"run": self.id, "status": self.status, "ran": self.ran, "cached": self.cached,
                "error": self.error, "error_node": self.error_node, "seconds": self.seconds,
                "outputs": self.outputs, "images": {n: len(v) for n, v in self.images.items()}}


def collect_outputs(session: Session, workflow: Workflow, outputs: dict[str, dict[str, Any]],
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, list[bytes]]]:
    """Summaries of every output, and PNGs of IMAGE outputs, by node id."""
    summaries: dict[str, dict[str, Any]] = {}
    images: dict[str, list[bytes]] = {}
    for node_id, values in outputs.items():
        node_type = session.registry.nodes[workflow.nodes[node_id].type]
        summaries[node_id] = {}
        for name, value in values.items():
            summaries[node_id][name] = summarize(value)
            for item in _elements(value):  # a node run once per list element: every element's images
                if is_image_output(node_type.outputs[name].socket.lineage(), item):
                    images.setdefault(node_id, []).extend(png_bytes(item))
    return summaries, images


def _elements(value: Any) -> list[Any]:
    """The value, or the leaves of a (nested) list of values."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in _elements(item)]
    return [value]


class RunManager:
    """Starts runs of one `Session` in a background thread and records their events."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.runs: dict[int, RunRecord] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, workflow: Workflow) -> RunRecord:
        """Start a run of a workflow that already validated; raises RuntimeError while one is running."""
        with self._lock:
            if self.busy:
                raise RuntimeError("a run is already in progress; cancel it or wait")
            record = RunRecord(next(self._ids))
            self.runs[record.id] = record
            for old in sorted(self.runs)[:-8]:  # keep the last few runs' images only
                del self.runs[old]
            self._thread = threading.Thread(target=self._run, args=(workflow, record), daemon=True,
                                            name=f"nodegraph-ui-run-{record.id}")
            self._thread.start()
        return record

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def cancel(self, record: RunRecord) -> bool:
        """Cancel `record` if it has not finished; its own token, so no other run is touched."""
        if record.status != "running":
            return False
        record.token.cancel()
        return True

    def _on_event(self, record: RunRecord, event: Event) -> None:
        data = event.as_dict()
        data.pop("run_id", None)
        preview = event.info.get("preview") if event.kind == "progress" else None
        if preview is not None:
            try:
                record.preview = png_bytes(preview[:1] if preview.dim() == 4 else preview)[0]
                data["preview"] = True
            except (ValueError, AttributeError):
                pass
        if len(record.events) >= MAX_EVENTS and event.kind == "progress":
            return
        record.events.append(data)

    def _run(self, workflow: Workflow, record: RunRecord) -> None:
        started = time.perf_counter()
        try:
            plan = self.session.compile(workflow)
            result = self.session.run(plan, outputs=display_targets(plan), on_event=lambda e: self._on_event(record, e),
                                      cancel_token=record.token)
            record.outputs, images = collect_outputs(self.session, workflow, result.outputs)
            record.images = images
            record.ran, record.cached = result.ran, result.cached
            record.status = "ok"
        except RunCancelled as err:
            record.status, record.error = "cancelled", str(err)
        except NodeFailed as err:
            record.status, record.error, record.error_node = "failed", str(err), err.node_id
        except WorkflowInvalid as err:
            record.status, record.error = "failed", str(err)
        except Exception as err:  # noqa: BLE001 - the page must learn about any failure
            record.status, record.error = "failed", f"{type(err).__name__}: {err}"
        record.seconds = time.perf_counter() - started
        record.events.append({"kind": "finished", "status": record.status})
