"""Primitive nodes return their coerced widget value through the engine, and feed links."""

import pytest

from nodegraph import Session, WorkflowInvalid

from .helpers import link, wf

CASES = [
    ("core/int", "value", 7, 7, int),
    ("core/int", "value", 7.0, 7, int),  # an integral float is coerced to int
    ("core/float", "value", 3, 3.0, float),  # an int is coerced to float
    ("core/float", "value", -0.25, -0.25, float),
    ("core/string", "value", "a red circle\nsecond line", "a red circle\nsecond line", str),
    ("core/bool", "value", True, True, bool),
    ("core/bool", "value", "false", False, bool),  # pydantic's lax bool parsing
    ("core/seed", "seed", 12345, 12345, int),
    ("core/json", "value", {"shape": [1, 2], "x": None}, {"shape": [1, 2], "x": None}, dict),
    ("core/json", "value", [1, 2.5, True], [1, 2.5, True], list),
]


@pytest.fixture(scope="module")
def session(builtin_registry):
    return Session(builtin_registry, device="cpu")


@pytest.mark.parametrize("type_id, name, given, expected, kind", CASES, ids=[f"{c[0]}={c[2]!r}" for c in CASES])
def test_primitive_returns_its_coerced_value(session, type_id, name, given, expected, kind):
    out = session.run(wf({"p": {"type": type_id, "inputs": {name: given}}}), outputs=["p"]).value("p")
    assert out == expected and type(out) is kind


@pytest.mark.parametrize("type_id, default", [("core/int", 0), ("core/float", 0.0), ("core/string", ""),
                                              ("core/bool", False), ("core/seed", 0), ("core/json", None)])
def test_primitive_defaults(session, type_id, default):
    out = session.run(wf({"p": {"type": type_id, "inputs": {}}}), outputs=["p"]).value("p")
    assert out == default and type(out) is type(default)


def test_primitive_feeds_a_widget_through_a_link(session):
    w = wf({"seed": {"type": "core/seed", "inputs": {"seed": 5}},
            "noise": {"type": "core/random_tensor", "inputs": {"shape": [3], "seed": link("seed", "int")}},
            "direct": {"type": "core/random_tensor", "inputs": {"shape": [3], "seed": 5}}})
    result = session.run(w, outputs=["noise", "direct"])
    assert result.value("noise").equal(result.value("direct"))


def test_primitive_bounds_and_types_are_checked(session):
    with pytest.raises(WorkflowInvalid, match="greater than or equal to 0"):
        session.run(wf({"p": {"type": "core/seed", "inputs": {"seed": -1}}}))
    with pytest.raises(WorkflowInvalid, match="node 'p', input 'value'"):
        session.run(wf({"p": {"type": "core/int", "inputs": {"value": "seven"}}}))
