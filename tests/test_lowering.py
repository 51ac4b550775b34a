"""Bypass, mute and subgraphs: saved in the one workflow format, honoured headlessly by the engine."""

from __future__ import annotations

import json

import pytest

from nodegraph import Session, Workflow, WorkflowInvalid, validate
from nodegraph.cli import main as cli_main

from . import engine_nodes
from .helpers import EventLog, link


def workflow(nodes: dict, subgraphs: dict | None = None) -> Workflow:
    data = {"format": "nodegraph/workflow", "version": 1, "name": "t", "nodes": nodes}
    if subgraphs:
        data["subgraphs"] = subgraphs
    return Workflow.from_dict(data)


def chain(mode_b: str | None = None, mode_c: str | None = None) -> dict:
    """a(2) -> b = a + 10 -> c = b + 100 -> out."""
    b = {"type": "test/add", "inputs": {"a": link("a", "float"), "b": 10.0}}
    c = {"type": "test/add", "inputs": {"a": link("b", "float"), "b": 100.0}}
    if mode_b:
        b["mode"] = mode_b
    if mode_c:
        c["mode"] = mode_c
    return {"a": {"type": "test/number", "inputs": {"value": 2.0}}, "b": b, "c": c,
            "out": {"type": "test/sink", "inputs": {"value": link("c", "float")}}}


# -- bypass ---------------------------------------------------------------------------------------

def test_bypass_passes_the_first_fitting_input_through(registry):
    engine_nodes.CALLS.clear()
    log = EventLog()
    result = Session(registry).run(workflow(chain(mode_b="bypass")), on_event=log)
    assert result.value("out") == 2.0 + 100.0  # b passes a's value on; c still runs
    assert engine_nodes.CALLS["test/add"] == 1
    assert [(e.node, e.message) for e in log if e.kind == "node_skipped"] == [("b", "bypassed")]


def test_a_bypassed_node_without_a_fitting_input_is_a_problem_naming_the_output(registry):
    """Only linked inputs pass through (a literal could not feed a socket-only input downstream)."""
    nodes = {"n": {"type": "test/number", "inputs": {"value": 1.0}, "mode": "bypass"},
             "out": {"type": "test/sink", "inputs": {"value": link("n", "float")}}}
    problems = validate(workflow(nodes), registry)
    assert [(p.kind, p.node) for p in problems] == [("bypass", "n")]
    assert "output 'float' (FLOAT) has no input of a compatible type" in problems[0].message
    # not consumed: nothing needs a pass-through, so no problem
    assert validate(workflow({"n": nodes["n"]}), registry) == []


def test_bypass_checks_types_of_the_pass_through(registry):
    """test/split takes a FLOAT and makes INT + FLOAT: the FLOAT output passes through, the INT one cannot."""
    nodes = {"a": {"type": "test/number", "inputs": {"value": 2.5}},
             "s": {"type": "test/split", "inputs": {"value": link("a", "float")}, "mode": "bypass"},
             "frac": {"type": "test/sink", "inputs": {"value": link("s", "fraction")}}}
    assert Session(registry).run(workflow(nodes)).value("frac") == 2.5
    nodes["whole"] = {"type": "test/sink", "inputs": {"value": link("s", "whole")}}
    problems = validate(workflow(nodes), registry)
    assert [(p.kind, p.node) for p in problems] == [("bypass", "s")] and "'whole' (INT)" in problems[0].message


# -- mute -----------------------------------------------------------------------------------------

def test_mute_skips_the_node_and_what_needs_it(registry):
    engine_nodes.CALLS.clear()
    nodes = {**chain(mode_b="mute"), "other": {"type": "test/sink", "inputs": {"value": link("a", "float")}}}
    log = EventLog()
    result = Session(registry).run(workflow(nodes), on_event=log)
    assert result.value("other") == 2.0 and "out" not in result.outputs
    assert engine_nodes.CALLS["test/add"] == 0
    skipped = {e.node: e.message for e in log if e.kind == "node_skipped"}
    assert skipped == {"b": "muted", "c": "needs muted node 'b'", "out": "needs skipped node 'c'"}


def test_an_optional_input_from_a_muted_node_falls_back_to_its_default(registry):
    nodes = {"a": {"type": "test/number", "inputs": {"value": 5.0}},
             "m": {"type": "test/number", "inputs": {"value": 7.0}, "mode": "mute"},
             "sum": {"type": "test/add", "inputs": {"a": link("a", "float"), "b": link("m", "float")}},
             "out": {"type": "test/sink", "inputs": {"value": link("sum", "float")}}}
    assert Session(registry).run(workflow(nodes)).value("out") == 5.0  # b's default 0.0


def test_asking_for_a_muted_output_says_so(registry):
    with pytest.raises(KeyError, match="'c' \\(needs muted node 'b'\\)"):
        Session(registry).run(workflow(chain(mode_b="mute")), outputs=["c"])


def test_modes_round_trip_and_bad_modes_are_refused(registry):
    w = workflow(chain(mode_b="bypass", mode_c="active"))
    saved = json.loads(w.to_json())
    assert saved["nodes"]["b"]["mode"] == "bypass" and "mode" not in saved["nodes"]["c"]
    assert Workflow.from_json(w.to_json()).to_json() == w.to_json()
    with pytest.raises(ValueError, match="nodes.b.mode"):
        workflow(chain(mode_b="sleep"))


def test_mute_and_bypass_from_the_cli(registry, tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(workflow({"a": {"type": "core/seed", "inputs": {"seed": 3}},
                              "b": {"type": "core/seed", "inputs": {"seed": 4}, "mode": "mute"}}).to_json())
    assert cli_main(["run", str(path)]) == 0
    err = capsys.readouterr().err
    assert "b skipped: muted" in err and "a (core/seed)" in err


# -- subgraphs ------------------------------------------------------------------------------------

PLUS_TEN_TIMES_TWO = {
    "nodes": {"plus": {"type": "test/add", "inputs": {"b": 10.0}},
              "twice": {"type": "test/add", "inputs": {"a": link("plus", "float"), "b": link("plus", "float")}}},
    "inputs": {"x": {"node": "plus", "input": "a"}, "offset": {"node": "plus", "input": "b"}},
    "outputs": {"y": {"node": "twice", "output": "float"}},
}


def test_a_subgraph_runs_as_its_inner_nodes(registry):
    nodes = {"a": {"type": "test/number", "inputs": {"value": 1.0}},
             "s": {"type": "subgraph/p10x2", "inputs": {"x": link("a", "float")}},
             "t": {"type": "subgraph/p10x2", "inputs": {"x": link("s", "y"), "offset": 0.5}},
             "out": {"type": "test/sink", "inputs": {"value": link("t", "y")}}}
    w = workflow(nodes, {"p10x2": PLUS_TEN_TIMES_TWO})
    session = Session(registry)
    result = session.run(w)
    assert result.value("out") == ((1 + 10) * 2 + 0.5) * 2
    assert sorted(result.ran) == ["a", "out", "s/plus", "s/twice", "t/plus", "t/twice"]
    # caching per inner node: a change inside t re-runs t's nodes only
    w.nodes["t"].inputs["offset"] = 1.5
    again = session.run(w)
    assert sorted(again.ran) == ["out", "t/plus", "t/twice"] and again.value("out") == (22 + 1.5) * 2


def test_problems_inside_a_subgraph_point_inside(registry):
    bad = json.loads(json.dumps(PLUS_TEN_TIMES_TWO))
    bad["nodes"]["plus"]["inputs"]["b"] = "ten"
    nodes = {"a": {"type": "test/number", "inputs": {}},
             "s": {"type": "subgraph/p", "inputs": {"x": link("a", "float"), "nope": 1}},
             "out": {"type": "test/sink", "inputs": {"value": link("s", "z")}}}
    problems = {(p.kind, p.node, p.input) for p in validate(workflow(nodes, {"p": bad}), registry)}
    assert problems == {("bad_value", "s/plus", "b"), ("unknown_input", "s", "nope"), ("dangling_link", "out", "value")}


def test_nested_subgraphs_flatten_and_cycles_are_refused(registry):
    outer = {"nodes": {"inner": {"type": "subgraph/p10x2", "inputs": {}}},
             "inputs": {"x": {"node": "inner", "input": "x"}}, "outputs": {"y": {"node": "inner", "output": "y"}}}
    nodes = {"a": {"type": "test/number", "inputs": {"value": 1.0}},
             "s": {"type": "subgraph/outer", "inputs": {"x": link("a", "float")}},
             "out": {"type": "test/sink", "inputs": {"value": link("s", "y")}}}
    result = Session(registry).run(workflow(nodes, {"p10x2": PLUS_TEN_TIMES_TWO, "outer": outer}))
    assert result.value("out") == 22.0 and "s/inner/twice" in result.ran
    loop = {"nodes": {"me": {"type": "subgraph/loop", "inputs": {}}}, "inputs": {}, "outputs": {}}
    problems = validate(workflow({"s": {"type": "subgraph/loop", "inputs": {}}}, {"loop": loop}), registry)
    assert [(p.kind, p.node) for p in problems] == [("cycle", "s/me")] and "loop -> loop" in problems[0].message


def test_a_muted_subgraph_mutes_its_nodes_and_what_needs_it(registry):
    nodes = {"a": {"type": "test/number", "inputs": {"value": 1.0}},
             "s": {"type": "subgraph/p", "inputs": {"x": link("a", "float")}, "mode": "mute"},
             "out": {"type": "test/sink", "inputs": {"value": link("s", "y")}},
             "keep": {"type": "test/sink", "inputs": {"value": link("a", "float")}}}
    plan = Session(registry).compile(workflow(nodes, {"p": PLUS_TEN_TIMES_TWO}))
    assert set(plan.nodes) == {"a", "keep"}
    assert plan.skipped == {"s/plus": "muted", "s/twice": "muted", "out": "needs muted node 's/twice'"}


def test_subgraphs_round_trip_through_the_file_format(registry, tmp_path):
    w = workflow({"s": {"type": "subgraph/p", "inputs": {"x": 1.0}}}, {"p": PLUS_TEN_TIMES_TWO})
    path = w.save(tmp_path / "w.json")
    again = Workflow.load(path)
    assert again.to_json() == w.to_json() and json.loads(again.to_json())["subgraphs"]["p"]["outputs"] == \
        {"y": {"node": "twice", "output": "float"}}
    assert Session(registry).run(again, outputs=["s/twice"]).value("s/twice") == 22.0
    with pytest.raises(WorkflowInvalid, match="no subgraph 'q' is defined"):
        Session(registry).run(workflow({"s": {"type": "subgraph/q", "inputs": {}}}))
