"""The one workflow format: the file the browser saves is the file the CLI runs.

    {"format": "nodegraph/workflow", "version": 1, "name": "...",
     "nodes": {"id": {"type": "ns/name", "version": 1,
                      "inputs": {"widget": 3, "socket": {"from": "other", "output": "image"}}}},
     "ui": {"positions": {"id": [x, y]}}}

A node may carry "mode": "bypass" or "mute" (omitted: active), and a node of type "subgraph/NAME" runs
the graph defined under "subgraphs": {"NAME": {"nodes": ..., "inputs": ..., "outputs": ...}} of the same
file (see `nodegraph.lowering`).
An input value is either a JSON literal or a link `{"from": node_id, "output": output_name}`.
Saving is byte-stable: keys sorted, two-space indent, trailing newline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .atomic import atomic_write_text
from .jsonkeys import DuplicateKeyError, loads_unique
from .png_workflow import PngWorkflowError, is_png, workflow_text

FORMAT = "nodegraph/workflow"
FORMAT_VERSION = 1
MAX_WORKFLOW_BYTES = 32 * 1024 * 1024
MAX_PNG_BYTES = 256 * 1024 * 1024
"""A PNG carrying a workflow may be this large (its pixels are skipped, not decoded)."""


class Link(BaseModel):
    """A link from another node's named output."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)
    source: str = Field(alias="from", min_length=1)
    output: str = Field(min_length=1)

    def to_json(self) -> dict[str, str]:
        return {"from": self.source, "output": self.output}


def is_link(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"from", "output"}


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str = Field(min_length=1)
    version: int | None = Field(default=None, ge=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    list_mode: str | None = None
    """How inputs fed lists combine when the node runs once per element: "zip" (the default) or
    "product" (see `nodegraph.lists`); checked, with the node named, at validation."""
    mode: Literal["active", "bypass", "mute"] | None = None
    """bypass: outputs pass an input of a fitting type through; mute: the node and what needs it are
    skipped (`nodegraph.lowering`). None and "active" run the node."""

    @field_validator("inputs", mode="before")
    @classmethod
    def _parse_links(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: Link.model_validate(v) if is_link(v) else v for k, v in value.items()}
        return value

    def links(self) -> dict[str, Link]:
        return {name: v for name, v in self.inputs.items() if isinstance(v, Link)}

    def literals(self) -> dict[str, Any]:
        return {name: v for name, v in self.inputs.items() if not isinstance(v, Link)}


class InputPort(BaseModel):
    """A subgraph's exposed input: the inner node input that the subgraph node's input feeds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)


class OutputPort(BaseModel):
    """A subgraph's exposed output: the inner node output that the subgraph node's output is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str = Field(min_length=1)
    output: str = Field(min_length=1)


class SubgraphSpec(BaseModel):
    """A graph used as one node ("type": "subgraph/NAME"): its nodes and the inputs/outputs it exposes."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    inputs: dict[str, InputPort] = Field(default_factory=dict)
    outputs: dict[str, OutputPort] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict)


class WorkflowFormatError(ValueError):
    """The file is not a workflow at all: bad JSON (with line and column) or a wrong top-level shape."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class Workflow(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    format: Literal["nodegraph/workflow"] = FORMAT
    version: Literal[1] = FORMAT_VERSION
    name: str = ""
    description: str = ""
    nodes: dict[str, NodeSpec] = Field(default_factory=dict)
    subgraphs: dict[str, SubgraphSpec] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict)

    # loading ------------------------------------------------------------------------------------
    @classmethod
    def from_json(cls, text: str | bytes) -> Workflow:
        """From JSON text, or from the bytes of a PNG that carries a workflow (`nodegraph.png_workflow`)."""
        if isinstance(text, bytes) and is_png(text):
            try:
                text = workflow_text(text, MAX_WORKFLOW_BYTES)
            except PngWorkflowError as err:
                raise WorkflowFormatError(str(err)) from None
        if len(text) > MAX_WORKFLOW_BYTES:
            raise WorkflowFormatError(f"workflow is {len(text)} bytes; the limit is {MAX_WORKFLOW_BYTES}")
        try:
            data = loads_unique(text)
        except DuplicateKeyError as err:
            raise WorkflowFormatError(str(err)) from None
        except json.JSONDecodeError as err:
            raise WorkflowFormatError(f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
        except (UnicodeDecodeError, RecursionError) as err:
            raise WorkflowFormatError(f"malformed JSON: {type(err).__name__}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Workflow:
        from pydantic import ValidationError

        if not isinstance(data, dict):
            raise WorkflowFormatError(f"a workflow is a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = []
            for e in err.errors():
                loc = ".".join(str(p) for p in e["loc"])
                problems.append(f"{loc}: {e['msg']}")
            raise WorkflowFormatError("not a valid workflow file:\n  " + "\n  ".join(problems), problems) from None
        except RecursionError:
            raise WorkflowFormatError("workflow is nested too deeply") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> Workflow:
        """A workflow file, or a PNG saved by `core/save_image` (its workflow chunk).

        Reads at most MAX_WORKFLOW_BYTES + 1 bytes (MAX_PNG_BYTES + 1 for a PNG), whatever the file claims
        to be: a FIFO, /dev/zero or a growing file reports no useful size, so the cap is on what is read."""
        path = Path(path)
        if path.is_dir():
            raise WorkflowFormatError(f"{path} is a folder, not a workflow file")
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_WORKFLOW_BYTES + 1)
                if is_png(data):
                    data += handle.read(MAX_PNG_BYTES + 1 - len(data))
        except OSError as err:
            raise WorkflowFormatError(f"cannot read workflow {path}: {err.strerror or err}") from None
        limit = MAX_PNG_BYTES if is_png(data) else MAX_WORKFLOW_BYTES
        if len(data) > limit:
            raise WorkflowFormatError(f"workflow {path} is larger than the limit of {limit} bytes")
        return cls.from_json(data)

    # saving -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"format": self.format, "version": self.version, "name": self.name,
                                "nodes": _nodes_to_dict(self.nodes)}
        if self.subgraphs:
            data["subgraphs"] = {name: _subgraph_to_dict(sub) for name, sub in self.subgraphs.items()}
        if self.description:
            data["description"] = self.description
        if self.ui:
            data["ui"] = self.ui
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically: a temporary file in the same folder, then rename over the target."""
        return atomic_write_text(Path(path), self.to_json())

    # editing ------------------------------------------------------------------------------------
    def set(self, address: str, value: Any) -> Workflow:
        """Set `node.input` to a literal value (or a link dict). Returns self for chaining."""
        node_id, sep, input_name = address.rpartition(".")
        if not sep or not node_id or not input_name:
            raise KeyError(f"{address!r}: expected NODE.INPUT")
        if node_id not in self.nodes:
            raise KeyError(f"{address!r}: no node {node_id!r} in this workflow")
        self.nodes[node_id].inputs[input_name] = Link.model_validate(value) if is_link(value) else value
        return self

    def copy_deep(self) -> Workflow:
        return Workflow.from_dict(json.loads(self.to_json()))


def _nodes_to_dict(nodes: dict[str, NodeSpec]) -> dict[str, Any]:
    out = {}
    for node_id, spec in nodes.items():
        entry: dict[str, Any] = {"type": spec.type,
                                 "inputs": {k: (v.to_json() if isinstance(v, Link) else v)
                                            for k, v in spec.inputs.items()}}
        if spec.version is not None:
            entry["version"] = spec.version
        if spec.list_mode is not None:
            entry["list_mode"] = spec.list_mode
        if spec.mode not in (None, "active"):
            entry["mode"] = spec.mode
        out[node_id] = entry
    return out


def _subgraph_to_dict(sub: SubgraphSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"nodes": _nodes_to_dict(sub.nodes),
                            "inputs": {k: p.model_dump() for k, p in sub.inputs.items()},
                            "outputs": {k: p.model_dump() for k, p in sub.outputs.items()}}
    if sub.description:
        data["description"] = sub.description
    if sub.ui:
        data["ui"] = sub.ui
    return data


def parse_cli_value(text: str) -> Any:
    """`--set a.b=VALUE`: JSON when it parses (numbers, true, lists), else the raw string."""
    try:
        return loads_unique(text)
    except json.JSONDecodeError:
        return text
    except RecursionError:
        raise ValueError(f"value nested too deeply ({len(text)} characters)") from None

