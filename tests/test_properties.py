"""Property tests: random DAGs run every node once in edge order; mutated JSON never crashes the loader."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import Session, Workflow, WorkflowFormatError, WorkflowInvalid, compile_workflow

from .helpers import EventLog, link, wf


@st.composite
def random_dags(draw):
    size = draw(st.integers(1, 25))
    nodes = {}
    for i in range(size):
        if i == 0 or draw(st.booleans()):
            nodes[f"n{i}"] = {"type": "test/number", "inputs": {"value": draw(st.integers(-5, 5))}}
        else:
            a = draw(st.integers(0, i - 1))
            inputs = {"a": link(f"n{a}", "float")}
            if draw(st.booleans()):
                inputs["b"] = link(f"n{draw(st.integers(0, i - 1))}", "float")
            nodes[f"n{i}"] = {"type": "test/add", "inputs": inputs}
    return nodes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nodes=random_dags())
def test_random_dags_run_each_node_once_in_edge_order(registry, nodes):
    log = EventLog()
    result = Session(registry).run(wf(nodes), outputs=list(nodes), on_event=log)
    started = log.nodes("node_start")
    assert sorted(started) == sorted(nodes)
    position = {n: i for i, n in enumerate(started)}
    values = {}
    for node_id in sorted(nodes, key=lambda n: int(n[1:])):
        spec = nodes[node_id]
        if spec["type"] == "test/number":
            values[node_id] = float(spec["inputs"]["value"])
        else:
            total = 0.0
            for source in spec["inputs"].values():
                assert position[source["from"]] < position[node_id]
                total += values[source["from"]]
            values[node_id] = total
        assert result[node_id]["float"] == values[node_id]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

VALID = {"format": "nodegraph/workflow", "version": 1, "name": "m", "nodes": {
    "a": {"type": "test/number", "inputs": {"value": 2.0}},
    "b": {"type": "test/add", "inputs": {"a": {"from": "a", "output": "float"}, "b": 1}},
    "c": {"type": "test/count", "inputs": {"n": 3, "mode": "up"}},
}}


def _paths(data, prefix=()):
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, (*prefix, key))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_workflows_fail_only_with_validation_errors(registry, data):
    doc = json.loads(json.dumps(VALID))
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[path[-1]] = data.draw(JSON_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent[path[-1]], dict):
        parent[path[-1]][data.draw(st.text(max_size=8))] = data.draw(JSON_VALUES)
    text = json.dumps(doc)
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(text)))
        text = text[:cut] + data.draw(st.text(max_size=3)) + text[cut:]
    try:
        workflow = Workflow.from_json(text)
        compile_workflow(workflow, registry)
    except (WorkflowFormatError, WorkflowInvalid):
        pass
