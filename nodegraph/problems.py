"""A problem of a workflow: what is wrong, and the node and input it is about (None: the whole file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str
    node: str | None = None
    input: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.node is not None:
            where = f"node {self.node!r}" + (f", input {self.input!r}" if self.input else "")
            where += ": "
        return f"{where}{self.message} [{self.kind}]"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "node": self.node, "input": self.input}
