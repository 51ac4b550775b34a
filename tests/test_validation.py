import pytest

from nodegraph import WorkflowInvalid, compile_workflow, validate

from .helpers import link, wf


def kinds(problems):
    return [(p.kind, p.node, p.input) for p in problems]


def test_valid_workflow_has_no_problems(registry):
    w = wf({"a": {"type": "test/number", "inputs": {}}, "b": {"type": "test/add", "inputs": {"a": link("a", "float")}}})
    assert validate(w, registry) == []


def test_unknown_type_suggests_close_names(registry):
    problems = validate(wf({"x": {"type": "test/ad", "inputs": {}}}), registry)
    assert kinds(problems) == [("unknown_type", "x", None)]
    assert "'test/add'" in problems[0].message


def test_unknown_namespace_names_missing_plugin(registry):
    problems = validate(wf({"x": {"type": "fancy/sampler", "inputs": {}}}), registry)
    assert "namespace 'fancy'" in problems[0].message


def test_unknown_input(registry):
    problems = validate(wf({"x": {"type": "test/number", "inputs": {"valu": 2}}}), registry)
    assert kinds(problems) == [("unknown_input", "x", "valu")]
    assert "'value'" in problems[0].message


def test_missing_required_input(registry):
    problems = validate(wf({"x": {"type": "test/add", "inputs": {}}}), registry)
    assert kinds(problems) == [("missing_input", "x", "a")]


def test_link_from_unknown_type_is_reported_once_not_also_as_missing(registry):
    """The unknown type is the one cause; the required input it feeds is not also 'neither set nor linked'."""
    problems = validate(wf({
        "src": {"type": "test/numbr", "inputs": {}},
        "x": {"type": "test/add", "inputs": {"a": link("src", "float")}},
        "y": {"type": "test/add", "inputs": {}},
    }), registry)
    assert kinds(problems) == [("unknown_type", "src", None), ("missing_input", "y", "a")]


def test_link_to_missing_node_or_output(registry):
    problems = validate(wf({
        "a": {"type": "test/number", "inputs": {}},
        "x": {"type": "test/add", "inputs": {"a": link("nope", "float"), "b": link("a", "int")}},
    }), registry)
    assert kinds(problems) == [("dangling_link", "x", "a"), ("dangling_link", "x", "b")]
    assert "'float'" in problems[1].message  # lists the outputs that exist


def test_type_mismatch_on_link(registry):
    problems = validate(wf({
        "f": {"type": "test/number", "inputs": {}},
        "c": {"type": "test/count", "inputs": {"n": link("f", "float")}},
    }), registry)
    assert kinds(problems) == [("type_mismatch", "c", "n")]
    assert "FLOAT" in problems[0].message and "INT" in problems[0].message


def test_value_out_of_bounds_or_wrong_kind(registry):
    problems = validate(wf({
        "a": {"type": "test/number", "inputs": {"value": 5000}},
        "b": {"type": "test/count", "inputs": {"n": "three"}},
        "c": {"type": "test/count", "inputs": {"mode": "sideways"}},
        "d": {"type": "test/sink", "inputs": {"value": 3}},
    }), registry)
    assert kinds(problems) == [("bad_value", "a", "value"), ("bad_value", "b", "n"),
                               ("bad_value", "c", "mode"), ("bad_value", "d", "value")]
    assert "connect a link" in problems[3].message


def test_cycle_names_its_nodes(registry):
    problems = validate(wf({
        "a": {"type": "test/add", "inputs": {"a": link("c", "float")}},
        "b": {"type": "test/add", "inputs": {"a": link("a", "float")}},
        "c": {"type": "test/add", "inputs": {"a": link("b", "float")}},
        "free": {"type": "test/number", "inputs": {}},
    }), registry)
    assert kinds(problems) == [("cycle", "a", None)]
    assert "['a', 'b', 'c']" in problems[0].message


def test_five_problems_reported_at_once_and_nothing_runs(registry):
    from . import engine_nodes

    before = sum(engine_nodes.CALLS.values())
    w = wf({
        "typo": {"type": "test/nmber", "inputs": {}},
        "unknown": {"type": "test/number", "inputs": {"colour": 1}},
        "missing": {"type": "test/add", "inputs": {}},
        "bounds": {"type": "test/count", "inputs": {"n": -4}},
        "dangling": {"type": "test/sink", "inputs": {"value": link("ghost", "x")}},
        "ok": {"type": "test/number", "inputs": {}},
    })
    with pytest.raises(WorkflowInvalid) as info:
        compile_workflow(w, registry)
    assert sorted(p.kind for p in info.value.problems) == sorted(
        ["unknown_type", "unknown_input", "missing_input", "bad_value", "dangling_link"])
    assert "5 problems" in str(info.value)
    assert sum(engine_nodes.CALLS.values()) == before
