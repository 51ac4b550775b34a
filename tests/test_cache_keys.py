"""Cache keys are honest: the same call shares a key however the JSON spelled it; a different call never does."""

import math

import pytest

from nodegraph import Session
from nodegraph.cache_key import static_digest
from nodegraph.validate import compile_workflow

from .helpers import EventLog, link, wf


def key_of(registry, node: dict) -> bytes:
    return compile_workflow(wf({"n": node}), registry).nodes["n"].static_digest


def test_int_and_float_spelling_of_a_float_input_share_a_key(registry):
    session = Session(registry)
    first = session.run(wf({"n": {"type": "test/number", "inputs": {"value": 4}}}))
    log = EventLog()
    second = session.run(wf({"n": {"type": "test/number", "inputs": {"value": 4.0}}}), on_event=log)
    assert log.nodes("node_start") == [] and second.cached == ["n"]
    assert first.value("n") == second.value("n") == 4.0


def test_explicit_default_and_omitted_input_share_a_key(registry):
    omitted = key_of(registry, {"type": "test/count", "inputs": {}})
    assert key_of(registry, {"type": "test/count", "inputs": {"n": 3, "mode": "up"}}) == omitted
    assert key_of(registry, {"type": "test/count", "inputs": {"n": 3.0}}) == omitted  # int input, integral float
    assert key_of(registry, {"type": "test/number", "inputs": {}}) == \
        key_of(registry, {"type": "test/number", "inputs": {"value": 1}})
    session = Session(registry)
    session.run(wf({"c": {"type": "test/count", "inputs": {}}}))
    log = EventLog()
    session.run(wf({"c": {"type": "test/count", "inputs": {"n": 3, "mode": "up"}}}), on_event=log)
    assert log.nodes("node_cached") == ["c"] and log.nodes("node_start") == []


def test_different_values_give_different_keys(registry):
    keys = {key_of(registry, {"type": "test/count", "inputs": inputs})
            for inputs in ({}, {"n": 4}, {"mode": "down"}, {"n": 4, "mode": "down"})}
    assert len(keys) == 4
    assert key_of(registry, {"type": "test/number", "inputs": {"value": 0.1 + 0.2}}) != \
        key_of(registry, {"type": "test/number", "inputs": {"value": 0.3}})


def test_json_values_that_compare_equal_in_python_keep_their_own_keys(registry):
    """1, 1.0 and True are == in Python but a JSON input passes each on as it is: three calls, three keys."""
    session = Session(registry)
    values = [1, 1.0, True, "1", [1], {"1": 1}, None, 0, False, 0.0, -0.0, [], {}, "", [True], [1.0]]
    for value in values:
        log = EventLog()
        out = session.run(wf({"j": {"type": "test/json", "inputs": {"value": value}}}), on_event=log).value("j")
        assert log.nodes("node_start") == ["j"], f"{value!r} was served another value's cached result"
        assert out == value and type(out) is type(value)
        if isinstance(value, float):
            assert math.copysign(1, out) == math.copysign(1, value)


def test_canonical_encoding_is_injective_over_tricky_values():
    samples = [0, 0.0, -0.0, False, None, "", [], (), {}, set(), 1, 1.0, True, "1", "1.0", "true",
               [1], (1,), {1}, {"1": 1}, {1: 1}, {"a": [1]}, {"a": (1,)}, [[1]], ["L", 1],
               float("nan"), float("inf"), -float("inf"), "nan", 1e16, 10**16, 0.1 + 0.2, 0.3]
    digests = {static_digest("t/x", 1, {"v": value}) for value in samples}
    assert len(digests) == len(samples)
    assert static_digest("t/x", 1, {"v": {"b": 1, "a": 2}}) == static_digest("t/x", 1, {"v": {"a": 2, "b": 1}})
    assert static_digest("t/x", 1, {"v": 1}) != static_digest("t/x", 2, {"v": 1})


def test_changing_a_seed_widget_reruns_the_node_with_new_numbers(registry):
    session = Session(registry)
    w = wf({"r": {"type": "test/random", "inputs": {"seed": 1}}})
    first = session.run(w).value("r")
    w.set("r.seed", 2)
    log = EventLog()
    second = session.run(w, on_event=log).value("r")
    assert log.nodes("node_start") == ["r"] and second != first
    w.set("r.seed", 1)
    assert session.run(w).value("r") == first


@pytest.mark.parametrize("first, then", [("whole", "fraction"), ("fraction", "whole")])
def test_switching_which_upstream_output_is_linked_reruns_downstream(registry, first, then):
    session = Session(registry)
    nodes = {"x": {"type": "test/number", "inputs": {"value": 2.5}},
             "s": {"type": "test/split", "inputs": {"value": link("x", "float")}},
             "out": {"type": "test/sink", "inputs": {"value": link("s", first)}}}
    expected = {"whole": 2, "fraction": 0.5}
    assert session.run(wf(nodes)).value("out") == expected[first]
    nodes["out"]["inputs"]["value"] = link("s", then)
    log = EventLog()
    assert session.run(wf(nodes), on_event=log).value("out") == expected[then]
    assert log.nodes("node_start") == ["out"] and log.nodes("node_cached") == ["s"]
