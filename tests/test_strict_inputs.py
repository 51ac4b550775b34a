"""Nothing silently coerced or half-written (issue 15, item 5): repeated JSON keys, NaN/inf and
`true` for a number, unbounded workflow reads, leftovers of interrupted atomic writes."""

import os
import time
from pathlib import Path

import pytest

import nodegraph.atomic as atomic
from nodegraph import Session, Workflow, validate
from nodegraph.workflow import MAX_WORKFLOW_BYTES, WorkflowFormatError

from .helpers import wf

DUPLICATE_NODE = """{
  "format": "nodegraph/workflow", "version": 1,
  "nodes": {
    "a": {"type": "test/number", "inputs": {"value": 1}},
    "b": {"type": "test/number", "inputs": {"value": 2}},
    "a": {"type": "test/number", "inputs": {"value": 3}}
  }
}"""

DUPLICATE_INPUT = """{"format": "nodegraph/workflow", "version": 1, "nodes": {
  "a": {"type": "test/number", "inputs": {"value": 1}},
  "b": {"type": "test/add", "inputs": {"a": 1,
        "b": 2, "a": 5}}}}"""


@pytest.mark.parametrize(("text", "key", "line"), [(DUPLICATE_NODE, "a", 6), (DUPLICATE_INPUT, "a", 4)])
def test_a_repeated_key_is_an_error_naming_the_key_and_its_line(text, key, line):
    with pytest.raises(WorkflowFormatError, match=rf"duplicate key '{key}' at line {line}\b"):
        Workflow.from_json(text)


def test_the_same_key_in_different_objects_is_fine():
    w = Workflow.from_json('{"nodes": {"a": {"type": "t/x", "inputs": {"a": 1}}, "b": {"type": "t/x"}}}')
    assert w.nodes["a"].inputs == {"a": 1}


@pytest.mark.parametrize(("node", "name", "value", "says"), [
    ("test/add", "a", float("nan"), "NaN and infinite"),
    ("test/add", "a", float("inf"), "NaN and infinite"),
    ("test/number", "value", float("nan"), ""),  # bounded: refused by its bounds or as NaN, never kept
    ("test/add", "a", float("-inf"), "NaN and infinite"),
    ("test/random", "seed", True, "boolean true"),
    ("test/count", "n", False, "boolean false"),
    ("test/number", "value", True, "boolean true"),
])
def test_nan_inf_and_bool_for_a_number_are_refused_by_validation(registry, node, name, value, says):
    problems = validate(wf({"n": {"type": node, "inputs": {name: value}}}), registry)
    assert [(p.kind, p.node, p.input) for p in problems] == [("bad_value", "n", name)]
    assert says in problems[0].message


def test_nan_spelled_in_the_workflow_file_is_refused(registry):
    text = '{"nodes": {"n": {"type": "test/number", "inputs": {"value": NaN}}, "s": {"type": "test/random", ' \
           '"inputs": {"seed": true}}}}'
    problems = validate(Workflow.from_json(text), registry)
    assert {(p.node, p.input) for p in problems} == {("n", "value"), ("s", "seed")}


def test_explicit_numbers_still_pass(registry):
    assert validate(wf({"n": {"type": "test/number", "inputs": {"value": 3}},
                        "r": {"type": "test/random", "inputs": {"seed": 4}}}), registry) == []


def test_workflow_files_are_read_with_a_byte_cap_whatever_the_file_is(tmp_path):
    started = time.perf_counter()
    with pytest.raises(WorkflowFormatError, match="larger than the limit"):
        Workflow.load("/dev/zero")
    assert time.perf_counter() - started < 30
    with pytest.raises(WorkflowFormatError, match="is a folder"):
        Workflow.load(tmp_path)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_WORKFLOW_BYTES + 1))
    with pytest.raises(WorkflowFormatError, match="larger than the limit"):
        Workflow.load(big)


def leftovers(folder: Path) -> tuple[Path, Path, Path]:
    """An old leftover of ours, a fresh one (a write in progress elsewhere), and a look-alike that is not ours."""
    old, fresh, other = folder / ".model.safetensors.0123456789ab.tmp", folder / ".img.png.a1b2c3d4e5f6.tmp", \
        folder / ".notes.tmp"
    for path in (old, fresh, other):
        path.write_bytes(b"partial")
    past = atomic.PROCESS_START - 3600
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    return old, fresh, other


def test_leftover_temp_files_are_removed_at_the_next_save_into_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept", set())
    old, fresh, other = leftovers(tmp_path)
    atomic.atomic_write_text(tmp_path / "workflow.json", "{}")
    assert not old.exists() and fresh.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name, "workflow.json"])


def test_leftover_temp_files_in_the_output_folder_are_removed_when_a_session_starts(registry, tmp_path):
    old, fresh, other = leftovers(tmp_path)
    Session(registry, output_dir=tmp_path)
    assert not old.exists() and fresh.exists() and other.exists()
