"""Lowering: the saved workflow (subgraphs, bypassed and muted nodes) -> the plain graph validation checks.

Both features live in the one workflow format, so the browser, the CLI, Python and the HTTP API run them
alike. Lowering happens first, before validation; every problem it finds names the node (and the input
or output) it is about, and nothing runs while there is one.

Subgraphs. A workflow may define reusable graphs under "subgraphs":

    "subgraphs": {"upscale": {"nodes": {...},
                              "inputs": {"image": {"node": "up", "input": "image"}},
                              "outputs": {"image": {"node": "sharpen", "output": "image"}}}}

and use one as a node of type "subgraph/upscale" whose inputs are the exposed inputs and whose outputs are
the exposed outputs. Flattening replaces that node by copies of the inner nodes, named
"<node id>/<inner id>" (so problems point inside: `up2/sharpen.amount`), gives each exposed inner input
the outer node's value or link, and re-points links to an exposed output at the inner node that makes it.
Caching works per inner node (each is an ordinary node after flattening). Subgraphs may use subgraphs;
a definition that uses itself, directly or not, is a problem.

Modes. A node's "mode" is "active" (the default, not written), "bypass" or "mute":
- bypass: the node does not run; each of its outputs that something consumes passes through the link of
  its first linked input (declaration order) whose type fits the output's type. None fitting is a problem
  naming the output. (Literal values do not pass: a socket-only input downstream could not take one.)
- mute: the node does not run, and neither does anything that needs it: a consumer whose required input
  comes from a muted node is skipped too (transitively); an optional input from one falls back to its
  default. Skipped nodes are reported (`Lowered.skipped`), not errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .problems import Problem
from .registry import Registry
from .types import can_connect
from .workflow import Link, NodeSpec, SubgraphSpec, Workflow

SUBGRAPH_PREFIX = "subgraph/"
MAX_SUBGRAPH_DEPTH = 16
MODES = ("active", "bypass", "mute")


@dataclass
class Lowered:
    workflow: Workflow
    """The plain graph: no subgraph nodes, no bypassed or skipped nodes."""
    problems: list[Problem] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """node id -> why it does not run ("muted", "bypassed", "needs muted node 'x'")."""
    cut: set[tuple[str, str]] = field(default_factory=set)
    """(node, input) links removed with a problem already said (so validation adds no "missing" one)."""


def lower(workflow: Workflow, registry: Registry) -> Lowered:
    """Flatten subgraphs, then apply modes. The input workflow is not changed (and is returned as it is
    when it uses neither: the common case costs no copy on every compile)."""
    plain = not workflow.subgraphs and all(
        not spec.type.startswith(SUBGRAPH_PREFIX) and spec.mode in (None, "active") for spec in workflow.nodes.values())
    if plain:
        return Lowered(workflow)
    problems: list[Problem] = []
    nodes, _ = _flatten(workflow.nodes, workflow.subgraphs, "", problems, ())
    cut: set[tuple[str, str]] = set()
    nodes, skipped = _apply_modes(nodes, registry, problems, cut)
    lowered = workflow.model_copy(update={"nodes": nodes, "subgraphs": {}})
    return Lowered(lowered, problems, skipped, cut)


# subgraphs --------------------------------------------------------------------------------------------

def _flatten(nodes: dict[str, NodeSpec], library: dict[str, SubgraphSpec], prefix: str,
             problems: list[Problem], using: tuple[str, ...]
             ) -> tuple[dict[str, NodeSpec], dict[str, dict[str, Link]]]:
    """`nodes` with every subgraph node replaced by its inner nodes (recursively), ids under `prefix`;
    and, per subgraph node among them, where each of its exposed outputs comes from once flattened."""
    exits: dict[str, dict[str, Link]] = {}  # subgraph node id -> exposed output -> inner (flattened) source
    flat: dict[str, NodeSpec] = {}
    for node_id, spec in nodes.items():
        full = prefix + node_id
        if not spec.type.startswith(SUBGRAPH_PREFIX):
            flat[full] = spec.model_copy(deep=True)
            flat[full].inputs = {k: _prefixed(v, prefix) for k, v in spec.inputs.items()}
            continue
        name = spec.type[len(SUBGRAPH_PREFIX):]
        definition = library.get(name)
        if definition is None:
            known = sorted(library)
            problems.append(Problem("unknown_type", f"no subgraph {name!r} is defined in this workflow"
                                            f" (defined: {known})", full))
            continue
        if name in using or len(using) >= MAX_SUBGRAPH_DEPTH:
            problems.append(Problem("cycle", f"subgraph {name!r} uses itself "
                                            f"({' -> '.join([*using, name])})", full))
            continue
        if spec.mode == "bypass":
            problems.append(Problem("bad_value", "a subgraph node cannot be bypassed; mute it, or "
                                            "bypass nodes inside it", full))
            continue
        inner = {k: v.model_copy(deep=True) for k, v in definition.nodes.items()}
        if spec.mode == "mute":
            for inner_spec in inner.values():
                inner_spec.mode = "mute"
        for exposed, value in spec.inputs.items():
            port = definition.inputs.get(exposed)
            if port is None:
                problems.append(Problem("unknown_input", f"subgraph {name!r} exposes no input {exposed!r};"
                                                f" its inputs are {sorted(definition.inputs)}", full, exposed))
                continue
            if port.node not in inner:
                problems.append(Problem("dangling_link", f"subgraph {name!r}: exposed input {exposed!r} "
                                                f"points at missing node {port.node!r}", full, exposed))
                continue
            outer = value if isinstance(value, _Outer) else _Outer(_prefixed(value, prefix))
            inner[port.node].inputs[port.input] = outer
        inner_flat, inner_exits = _flatten(inner, library, f"{full}/", problems, (*using, name))
        flat.update(inner_flat)
        exits[full] = {}
        for exposed, port in definition.outputs.items():
            source = f"{full}/{port.node}"
            nested = inner_exits.get(source, {}).get(port.output) if source in inner_exits else None
            exits[full][exposed] = nested or Link.model_validate({"from": source, "output": port.output})
    for node_id, spec in flat.items():  # links to a subgraph's outputs -> the inner node that makes them
        for input_name, value in list(spec.inputs.items()):
            if isinstance(value, _Outer):
                spec.inputs[input_name] = value = value.value
            if isinstance(value, Link) and value.source in exits:
                target = exits[value.source].get(value.output)
                if target is None:
                    problems.append(Problem(
                        "dangling_link", f"subgraph node {value.source!r} has no output {value.output!r}; its "
                        f"outputs are {sorted(exits[value.source])}", node_id, input_name))
                    continue
                spec.inputs[input_name] = target
    return flat, exits


@dataclass(frozen=True)
class _Outer:
    """A value given from outside a subgraph: already named in the outer scope, so not prefixed again."""

    value: Any


def _prefixed(value: Any, prefix: str) -> Any:
    if isinstance(value, _Outer):
        return value
    if prefix and isinstance(value, Link):
        return Link.model_validate({"from": prefix + value.source, "output": value.output})
    return value


# modes ------------------------------------------------------------------------------------------------

def _order(nodes: dict[str, NodeSpec]) -> list[str]:
    """Sources before consumers where links allow (a cycle or a dangling link is left to validation)."""
    done: list[str] = []
    state: dict[str, int] = {}
    for start in nodes:
        stack = [(start, False)]
        while stack:
            node_id, leaving = stack.pop()
            if leaving:
                state[node_id] = 2
                done.append(node_id)
                continue
            if state.get(node_id):
                continue
            state[node_id] = 1
            stack.append((node_id, True))
            for value in nodes[node_id].inputs.values():
                if isinstance(value, Link) and value.source in nodes and not state.get(value.source):
                    stack.append((value.source, False))
    return done


def _apply_modes(nodes: dict[str, NodeSpec], registry: Registry, problems: list[Problem],
                 cut: set[tuple[str, str]]) -> tuple[dict[str, NodeSpec], dict[str, str]]:
    if all(spec.mode in (None, "active") for spec in nodes.values()):
        return nodes, {}
    skipped: dict[str, str] = {}
    passed: dict[tuple[str, str], Any] = {}  # (bypassed node, output) -> the value it passes through
    unpassable: dict[tuple[str, str], str] = {}  # (bypassed node, output) -> why nothing passes
    reported: dict[tuple[str, str], Problem] = {}
    kept: dict[str, NodeSpec] = {}
    for node_id in _order(nodes):
        spec = nodes[node_id]
        node_type = registry.nodes.get(spec.type)
        inputs: dict[str, Any] = {}
        needs: str | None = None
        for name, value in spec.inputs.items():
            while isinstance(value, Link) and (value.source, value.output) in passed:
                value = passed[(value.source, value.output)]
            if isinstance(value, Link) and (value.source, value.output) in unpassable:
                problem = Problem("bypass", unpassable.pop((value.source, value.output)), value.source)
                problems.append(problem)  # once, however many consumers
                reported[(value.source, value.output)] = problem
            if isinstance(value, Link) and (value.source, value.output) in reported:
                cut.add((node_id, name))
                continue
            if isinstance(value, Link) and value.source in skipped:
                input_spec = node_type.inputs.get(name) if node_type is not None else None
                if input_spec is not None and not input_spec.required:
                    continue  # an optional input falls back to its default
                needs = needs or value.source
                continue
            inputs[name] = value
        if spec.mode == "mute":
            skipped[node_id] = "muted"
        elif needs is not None:
            skipped[node_id] = f"needs muted node {needs!r}" if skipped[needs] == "muted" \
                else f"needs skipped node {needs!r}"
        elif spec.mode == "bypass":
            skipped[node_id] = "bypassed"
            if node_type is None:
                problems.append(Problem("unknown_type", f"unknown node type {spec.type!r}", node_id))
                continue
            for output, out_spec in node_type.outputs.items():
                source = next((inputs[name] for name, in_spec in node_type.inputs.items()
                               if isinstance(inputs.get(name), Link)
                               and can_connect(in_spec.socket, out_spec.socket)), None)
                if source is None:
                    unpassable[(node_id, output)] = (
                        f"bypassed, but output {output!r} ({out_spec.socket.name}) has no input of a compatible "
                        "type to pass through; un-bypass it or mute it")
                else:
                    passed[(node_id, output)] = source
        else:
            copy = spec.model_copy(deep=True)
            copy.inputs = inputs
            kept[node_id] = copy
    order = {node_id: i for i, node_id in enumerate(nodes)}
    return dict(sorted(kept.items(), key=lambda item: order[item[0]])), skipped
