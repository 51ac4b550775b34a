"""Run events delivered to subscribers: the CLI draws progress from them, the UI shows them live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

EventKind = Literal["run_start", "node_skipped", "node_start", "node_cached", "node_done", "progress", "warning",
                    "node_error", "run_done"]


@dataclass
class Event:
    kind: EventKind
    run_id: int
    node: str | None = None
    type: str | None = None
    seconds: float | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None
    status: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """An event as `as_dict` wrote it (from another process: a server's stream, a Ray worker)."""
        fields_ = ("node", "type", "seconds", "step", "total", "message", "status")
        return cls(data.get("kind", ""), int(data.get("run_id", 0)), **{f: data.get(f) for f in fields_},
                   info=data.get("info") or {})

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly view; `info` keeps only plain values (a preview tensor stays in `info`)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["info"] = {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))}
        return {k: v for k, v in data.items() if v is not None and v != {}}


Subscriber = Callable[[Event], None]
