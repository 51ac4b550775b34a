"""Hostile workflow input is rejected with a validation error: never a crash, a hang or code execution."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nodegraph import WorkflowFormatError, WorkflowInvalid, compile_workflow
from nodegraph.workflow import Workflow

NASTY = st.one_of(
    st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")), st.just(10**400), st.just(-(10**30)),
    st.integers(), st.floats(), st.text(), st.just("x" * 10_000_000), st.just("\u202e\u0000\ud7ff🙂"),
    st.lists(st.integers(), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just({"from": "a", "output": "float"}), st.just({"from": 3, "output": None}), st.none(), st.booleans(),
)


def load(text: str, registry):
    try:
        compile_workflow(Workflow.from_json(text), registry)
        return "valid"
    except (WorkflowFormatError, WorkflowInvalid) as err:
        return str(err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(node_type=st.sampled_from(["test/count", "test/number", "test/add", "test/sink", "test/choose"]),
       input_name=st.sampled_from(["n", "value", "a", "mode", "condition", "yes", "", "ñ"]), value=NASTY)
def test_nasty_values_are_rejected_cleanly(registry, node_type, input_name, value):
    doc = {"format": "nodegraph/workflow", "version": 1, "nodes": {
        "a": {"type": "test/number", "inputs": {}},
        "x": {"type": node_type, "inputs": {input_name: value}}}}
    text = json.dumps(doc, allow_nan=True)
    result = load(text, registry)
    # Either it validates, or the report is a clean list of problems that names the node at fault
    # (a validation problem "node 'x', ...", or a file-shape problem located at "nodes.x.inputs...").
    invalid = result.startswith("workflow is invalid") and "node 'x'" in result
    malformed = result.startswith("not a valid workflow file") and "nodes.x." in result
    assert result == "valid" or invalid or malformed, result


def test_specific_hostile_documents(registry):
    deep = "[" * 100_000 + "]" * 100_000
    assert "malformed" in load(deep, registry) or "nested" in load(deep, registry)
    deep_inputs = json.dumps({"nodes": {"x": {"type": "test/sink", "inputs": {"value": [[[[[[[]]]]]]]}}}})
    assert "connect a link" in load(deep_inputs, registry)
    steps = json.dumps({"nodes": {"x": {"type": "test/count", "inputs": {"n": -5}}}})
    assert "greater than or equal to 0" in load(steps, registry)
    huge = json.dumps({"nodes": {"x": {"type": "test/count", "inputs": {"n": 10**100}}}})
    assert "bad_value" in load(huge, registry)
    nan = '{"nodes": {"x": {"type": "test/number", "inputs": {"value": NaN}}}}'
    assert "bad_value" in load(nan, registry)
    pickle_like = json.dumps({"nodes": {"x": {"type": "__import__('os').system", "inputs": {}}}})
    assert "unknown_type" in load(pickle_like, registry)
    with pytest.raises(WorkflowFormatError, match="limit"):
        Workflow.from_json(" " * (33 * 1024 * 1024))
