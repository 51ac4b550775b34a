"""Validation: check a whole workflow against the registry and report every problem at once.

`compile_workflow` turns a valid workflow into a `Plan` (typed, coerced, topologically ordered)
that the scheduler runs; on any problem it raises `WorkflowInvalid` and nothing runs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx

from .cache_key import static_digest
from .confine import PathPolicy, PathRefused
from .lists import LIST_MODES
from .lowering import lower
from .node import InputSpec, InputValueError, NodeType, OutputSpec
from .problems import Problem
from .registry import Registry
from .types import can_connect
from .workflow import Link, Workflow


class WorkflowInvalid(ValueError):
    """Raised with every problem of a workflow; nothing has run."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"workflow is invalid ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}")


@dataclass
class PlanNode:
    id: str
    type: NodeType
    values: dict[str, Any]
    links: dict[str, tuple[str, str]]
    static_digest: bytes = b""
    read_paths: dict[str, Path] = field(default_factory=dict)
    """Literal `InputPath` values as validation resolved and confined them: what gets fingerprinted."""
    list_mode: str = "zip"
    levels: tuple[str, ...] = ()
    """The list levels this node runs over, outer first: (), ("list",), ("sweep",) or ("sweep", "list")."""
    mapped: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """For each linked input, the levels of its value that the node maps over (empty: one value)."""
    whole: frozenset[str] = frozenset()
    """Linked inputs that take the innermost list of their value whole."""
    output_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The list levels each output carries (the node's levels, plus its own list for `ListOf` outputs)."""


@dataclass
class Plan:
    workflow: Workflow
    nodes: dict[str, PlanNode]
    order: list[str]
    graph: nx.DiGraph
    consumers: dict[str, list[str]] = field(default_factory=dict)
    paths: PathPolicy | None = None
    """The policy the path inputs were confined by (a Session recompiles a Plan made under another)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Nodes of the workflow that do not run, and why (muted, bypassed, needs a muted node)."""

    def output_nodes(self) -> list[str]:
        marked = [n for n in self.order if self.nodes[n].type.output_node]
        return marked or [n for n in self.order if self.graph.out_degree(n) == 0]


def _keyed_default(spec: InputSpec) -> Any:
    """The default as the key sees it: coerced like a set value, so `x: float = 4` keys like `4.0`."""
    if not spec.is_widget:
        return spec.default
    try:
        return spec.coerce(spec.default)
    except InputValueError:  # e.g. a None default outside the annotation: key it as written
        return spec.default


def _check_choice(spec: Any, value: Any, registry: Registry) -> None:
    """A `Choice` input's name must be a registered component of its kind."""
    if spec.choice is not None and isinstance(value, str):
        try:
            registry.component(spec.choice, value)
        except LookupError as err:
            raise LookupError(f"{err}; a plugin that is not loaded may provide it "
                              "(`nodegraph plugins` lists the loaded ones)") from None


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_paths(node_id: str, node_type: NodeType, values: dict[str, Any], policy: PathPolicy,
                 problems: list[Problem]) -> dict[str, Path]:
    """Confine every literal (or default) path value; the resolved read paths, to fingerprint later.
    Link-fed paths are checked by the scheduler when their value arrives."""
    read_paths: dict[str, Path] = {}
    for name in node_type.path_inputs:
        spec = node_type.inputs[name]
        if name not in values or (values[name] is None and not spec.required):
            continue
        try:
            resolved = policy.check(spec, values[name])
        except PathRefused as err:
            problems.append(Problem("path_refused", str(err), node_id, name))
            continue
        if spec.is_file:
            read_paths[name] = resolved
    return read_paths


def _check_node(node_id: str, spec_inputs: dict[str, Any], node_type: NodeType, workflow: Workflow,
                registry: Registry, problems: list[Problem], policy: PathPolicy) -> PlanNode:
    values: dict[str, Any] = {}
    keyed: dict[str, Any] = {}  # values as the cache key sees them (defaults coerced)
    links: dict[str, tuple[str, str]] = {}
    reported: set[str] = set()  # inputs with a problem already said, here or on the source node
    before = len(problems)
    for name, value in spec_inputs.items():
        spec = node_type.inputs.get(name)
        if spec is None:
            known = list(node_type.inputs)
            problems.append(Problem("unknown_input", f"{node_type.id} has no input {name!r}"
                                    f"{_suggest(name, known)}; its inputs are {known}", node_id, name))
            continue
        if isinstance(value, Link):
            source = workflow.nodes.get(value.source)
            if source is None:
                problems.append(Problem("dangling_link", f"links to missing node {value.source!r}"
                                        f"{_suggest(value.source, list(workflow.nodes))}", node_id, name))
                continue
            source_type = registry.nodes.get(source.type)
            if source_type is None:
                reported.add(name)  # the source's unknown type is the one problem; not also "missing"
                continue
            out = source_type.outputs.get(value.output)
            if out is None:
                outputs = list(source_type.outputs)
                problems.append(Problem("dangling_link", f"node {value.source!r} ({source.type}) has no output "
                                        f"{value.output!r}; its outputs are {outputs}", node_id, name))
                continue
            links[name] = (value.source, value.output)  # its type is checked by `_check_lists`
        else:
            if not spec.is_widget:
                problems.append(Problem("bad_value", f"this input is a {spec.socket.name} socket; "
                                        "connect a link to it instead of a value", node_id, name))
                continue
            try:
                values[name] = keyed[name] = spec.coerce(value)
                _check_choice(spec, values[name], registry)
            except (InputValueError, LookupError) as err:
                problems.append(Problem("bad_value", str(err), node_id, name))
    reported.update(p.input for p in problems[before:])
    for name, spec in node_type.inputs.items():
        if name not in values and name not in links and name not in reported:
            if spec.required:
                about = f": {spec.description}" if spec.description else ""
                problems.append(Problem("missing_input", f"required input of type {spec.socket.name} "
                                        f"is neither set nor linked{about}", node_id, name))
            else:
                values[name] = spec.default
                keyed[name] = _keyed_default(spec)
    read_paths = _check_paths(node_id, node_type, values, policy, problems)
    return PlanNode(node_id, node_type, values, links, static_digest(node_type.id, node_type.version, keyed),
                    read_paths)


def _link_rule(out: OutputSpec, carried: tuple[str, ...], spec: InputSpec) -> tuple[bool, tuple[str, ...]] | None:
    """How an input takes a link's value: (takes the innermost list whole, the levels it maps over), or
    None when the types do not fit. See `nodegraph.lists` for the rule."""
    if carried and carried[-1] == "list" and spec.list_element is not None \
            and can_connect(out.socket, spec.list_element):
        return True, carried[:-1]
    target = spec.list_element if spec.list_socket and spec.list_element is not None else spec.socket
    if can_connect(out.socket, target):
        return False, carried
    return None


def _describe_link(out: OutputSpec, carried: tuple[str, ...]) -> str:
    return " of ".join([*(f"a {level}" for level in carried), out.socket.name])


def _describe_input(spec: InputSpec) -> str:
    if spec.list_element is not None:
        return f"a list of {spec.list_element.name}" if spec.list_socket else \
            f"{spec.socket.name} (a list of {spec.list_element.name})"
    return spec.socket.name


def _check_lists(order: list[str], plan_nodes: dict[str, PlanNode], problems: list[Problem]) -> None:
    """Type-check every link and work out, in topological order, which nodes run once per list element
    and what their outputs carry."""
    for node_id in order:
        pn = plan_nodes.get(node_id)
        if pn is None:
            continue
        levels: set[str] = set()
        whole: set[str] = set()
        for name, (source, output) in pn.links.items():
            spec = pn.type.inputs[name]
            source_pn = plan_nodes.get(source)
            if source_pn is None:  # its own problem (unknown type, failed migration) is reported
                continue
            out = source_pn.type.outputs[output]
            carried = source_pn.output_levels.get(output, ())
            rule = _link_rule(out, carried, spec)
            if rule is None:
                problems.append(Problem("type_mismatch", f"{source}.{output} is {_describe_link(out, carried)}, "
                                        f"but this input takes {_describe_input(spec)}", node_id, name))
                continue
            takes_whole, mapped = rule
            if takes_whole:
                whole.add(name)
            if mapped:
                pn.mapped[name] = mapped
                levels.update(mapped)
                if spec.lazy:
                    problems.append(Problem("bad_list", f"{source}.{output} carries {_describe_link(out, carried)}, "
                                            "and a lazy input cannot run its node once per element", node_id, name))
        pn.whole = frozenset(whole)
        pn.levels = tuple(level for level in ("sweep", "list") if level in levels)
        for output, spec in pn.type.outputs.items():
            own = (spec.list_kind,) if spec.list_kind else ()
            if (spec.list_kind == "sweep" and pn.levels) or (spec.list_kind == "list" and "list" in pn.levels):
                inputs = ", ".join(repr(n) for n in pn.mapped)
                problems.append(Problem("bad_list", f"this node makes a {spec.list_kind} ({output!r}) and would run "
                                        f"once per element of {inputs}: a {spec.list_kind} of {spec.list_kind}s is "
                                        "not supported", node_id))
                own = ()
            pn.output_levels[output] = pn.levels + own


def _migrated_inputs(node_id: str, saved: int | None, node_type: NodeType, inputs: dict[str, Any],
                     problems: list[Problem]) -> dict[str, Any] | None:
    saved = 1 if saved is None else saved  # every node type starts at v1; unversioned nodes were saved by it
    if saved == node_type.version:
        return inputs
    if saved > node_type.version:
        problems.append(Problem("stale_version", f"saved with {node_type.id} v{saved}, but this nodegraph has "
                                f"v{node_type.version}; update the plugin that provides it", node_id))
        return None
    try:
        return node_type.migrate(saved, inputs)
    except LookupError as err:
        problems.append(Problem("stale_version", f"saved with {node_type.id} v{saved}, now v{node_type.version}, "
                                f"and {err}; re-create this node", node_id))
    except Exception as err:  # noqa: BLE001 - a broken migration is a problem of this node
        problems.append(Problem("stale_version", f"migration from v{saved} failed: {err}", node_id))
    return None


def _namespace_hint(type_id: str, registry: Registry) -> str:
    namespace = type_id.split("/", 1)[0]
    if "/" in type_id and not any(t.split("/", 1)[0] == namespace for t in registry.nodes):
        return f"; no loaded plugin provides namespace {namespace!r}: install or enable the plugin that does"
    return ""


def check(workflow: Workflow, registry: Registry, paths: PathPolicy | None = None
          ) -> tuple[list[Problem], dict[str, PlanNode], nx.DiGraph, dict[str, str]]:
    """Every problem of `workflow`, its plan nodes, link graph and skipped nodes (node id -> why: muted,
    bypassed, needs a muted node). Subgraphs are flattened and modes applied first (`nodegraph.lowering`);
    path inputs are confined by `paths` (default: the working folder for reads, ./outputs for writes;
    see `PathPolicy.build`)."""
    policy = paths if paths is not None else PathPolicy.build(registry=registry)
    lowered = lower(workflow, registry)
    problems: list[Problem] = list(lowered.problems)
    workflow = lowered.workflow
    plan_nodes: dict[str, PlanNode] = {}
    graph = nx.DiGraph()
    graph.add_nodes_from(workflow.nodes)
    for node_id, spec in workflow.nodes.items():
        for _name, value in spec.inputs.items():
            if isinstance(value, Link) and value.source in workflow.nodes:
                graph.add_edge(value.source, node_id)
        node_type = registry.nodes.get(spec.type)
        if node_type is None:
            hint = _suggest(spec.type, list(registry.nodes)) + _namespace_hint(spec.type, registry)
            problems.append(Problem("unknown_type", f"unknown node type {spec.type!r}{hint}", node_id))
            continue
        inputs = _migrated_inputs(node_id, spec.version, node_type, spec.inputs, problems)
        if inputs is None:
            continue
        plan_nodes[node_id] = _check_node(node_id, inputs, node_type, workflow, registry, problems, policy)
        if spec.list_mode is not None:
            if spec.list_mode in LIST_MODES:
                plan_nodes[node_id].list_mode = spec.list_mode
            else:
                problems.append(Problem("bad_value", f"list_mode must be one of {list(LIST_MODES)}, "
                                        f"got {spec.list_mode!r}", node_id))
    acyclic = nx.is_directed_acyclic_graph(graph)
    if not acyclic:
        for component in nx.strongly_connected_components(graph):
            members = sorted(component)
            if len(members) > 1 or graph.has_edge(members[0], members[0]):
                problems.append(Problem("cycle", f"cycle through nodes {members}; links must not loop", members[0]))
    _check_lists(list(nx.topological_sort(graph)) if acyclic else list(workflow.nodes), plan_nodes, problems)
    problems = [p for p in problems if not (p.kind == "missing_input" and (p.node, p.input) in lowered.cut)]
    return problems, plan_nodes, graph, lowered.skipped


def validate(workflow: Workflow, registry: Registry, paths: PathPolicy | None = None) -> list[Problem]:
    return check(workflow, registry, paths)[0]


def compile_workflow(workflow: Workflow, registry: Registry, paths: PathPolicy | None = None) -> Plan:
    """A runnable Plan, or WorkflowInvalid with every problem (path inputs confined by `paths`)."""
    paths = paths if paths is not None else PathPolicy.build(registry=registry)
    problems, plan_nodes, graph, skipped = check(workflow, registry, paths)
    if problems:
        raise WorkflowInvalid(problems)
    order = list(nx.lexicographical_topological_sort(graph)) if len(graph) < 2000 \
        else list(nx.topological_sort(graph))
    consumers = {n: list(graph.successors(n)) for n in graph}
    return Plan(workflow, plan_nodes, order, graph, consumers, paths, skipped)
