import json

import pytest

from nodegraph import Workflow, WorkflowFormatError, compile_workflow, validate
from nodegraph.workflow import Link

from .helpers import link, wf


def sample() -> Workflow:
    return wf({
        "b": {"type": "test/add", "inputs": {"a": link("a", "float"), "b": 2.5}},
        "a": {"type": "test/number", "inputs": {"value": 1.0}},
    })


def test_round_trip_is_byte_stable(tmp_path):
    path = tmp_path / "w.json"
    sample().save(path)
    first = path.read_bytes()
    Workflow.load(path).save(path)
    assert path.read_bytes() == first
    data = json.loads(first)
    assert list(data["nodes"]) == ["a", "b"]  # sorted keys
    assert data["nodes"]["b"]["inputs"]["a"] == {"from": "a", "output": "float"}
    assert first.endswith(b"\n") and b'\n  "format"' in first


def test_links_are_parsed_and_set_overrides():
    w = sample()
    assert isinstance(w.nodes["b"].inputs["a"], Link)
    w.set("b.b", 4)
    assert w.nodes["b"].inputs["b"] == 4
    w.set("b.b", {"from": "a", "output": "float"})
    assert isinstance(w.nodes["b"].inputs["b"], Link)
    with pytest.raises(KeyError, match="no node 'zz'"):
        w.set("zz.value", 1)
    with pytest.raises(KeyError, match="NODE.INPUT"):
        w.set("novalue", 1)


def test_malformed_json_reports_line_and_column():
    with pytest.raises(WorkflowFormatError, match="line 3, column 5"):
        Workflow.from_json('{\n  "nodes": {},\n    oops\n}')


def test_wrong_top_level_shape():
    with pytest.raises(WorkflowFormatError, match="nodes.x.type"):
        Workflow.from_dict({"nodes": {"x": {"inputs": {}}}})
    with pytest.raises(WorkflowFormatError, match="JSON object"):
        Workflow.from_json("[1, 2]")
    with pytest.raises(WorkflowFormatError, match="format"):
        Workflow.from_dict({"format": "comfyui", "nodes": {}})


def test_migration_chain_runs(registry):
    w = wf({"v": {"type": "test/versioned", "version": 1, "inputs": {"old": 7}}})
    plan = compile_workflow(w, registry)
    assert plan.nodes["v"].values == {"new": 7}


def test_stale_version_without_migration_is_explained(registry):
    w = wf({"v": {"type": "test/unmigratable", "version": 1, "inputs": {"value": 1}}})
    problems = validate(w, registry)
    assert [p.kind for p in problems] == ["stale_version"]
    assert "v1" in problems[0].message and "v2" in problems[0].message
    newer = wf({"v": {"type": "test/count", "version": 9, "inputs": {}}})
    assert "update the plugin" in validate(newer, registry)[0].message


def test_atomic_save_leaves_no_temp_files(tmp_path):
    sample().save(tmp_path / "w.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.json"]
