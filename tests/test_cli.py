"""The CLI in a subprocess, as users run it: exit codes, stdout/stderr, outputs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "nodegraph.cli", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=300)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return str(ROOT / "workflows" / "demo_clouds.json")


def test_run_writes_png_and_reports_cache(demo, tmp_path):
    proc = cli("run", demo, "--out", str(tmp_path), "--repeat", "2", "--set", "seed.seed=11")
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["clouds_00001.png", "clouds_00002.png"]
    assert "run 2: 1 ran, 1 cached" in proc.stderr
    assert "save.paths" in proc.stdout


def test_run_json_events(demo, tmp_path):
    proc = cli("run", demo, "--out", str(tmp_path), "--events", "json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["kind"] == "run_start" and events[-1] == {**events[-1], "kind": "run_done", "status": "ok"}
    assert {e["node"] for e in events if e["kind"] == "node_done"} == {"seed", "noise", "smooth", "image", "grid",
                                                                       "save"}


def test_invalid_set_and_invalid_workflow_exit_2(demo, tmp_path):
    proc = cli("run", demo, "--out", str(tmp_path), "--set", "seed.seed=-3")
    assert proc.returncode == 2 and "node 'seed', input 'seed'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", demo, "--set", "nosuch.x=1")
    assert proc.returncode == 2 and "no node 'nosuch'" in proc.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"nodes": {"a": {"type": "core/sed", "inputs": {}},'
                      ' "b": {"type": "core/math", "inputs": {"a": {"from": "zz", "output": "float"}}}}}')
    proc = cli("validate", str(broken))
    assert proc.returncode == 2
    assert "'core/seed'" in proc.stderr and "missing node 'zz'" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("validate", str(broken), "--json")
    assert proc.returncode == 2 and len(json.loads(proc.stdout)["problems"]) == 2
    (tmp_path / "bad.json").write_text("{\n  nope")
    proc = cli("validate", str(tmp_path / "bad.json"))
    assert proc.returncode == 2 and "line 2, column 3" in proc.stderr


def test_validate_ok(demo):
    proc = cli("validate", demo)
    assert proc.returncode == 0 and "valid (6 nodes)" in proc.stdout


def test_node_failure_exits_1_naming_the_node(tmp_path):
    w = tmp_path / "fail.json"
    w.write_text(json.dumps({"format": "nodegraph/workflow", "version": 1, "name": "f", "nodes": {
        "m": {"type": "core/math", "inputs": {"a": 1.0, "b": 0.0, "operation": "divide"}},
        "p": {"type": "core/to_int", "inputs": {"value": {"from": "m", "output": "float"}}}}}))
    proc = cli("run", str(w), "--out", str(tmp_path))
    assert proc.returncode == 1
    assert "node 'm' (core/math) failed: ZeroDivisionError" in proc.stderr and "Traceback" not in proc.stderr


def test_nodes_and_plugins_listing():
    proc = cli("nodes", "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    ids = {n["id"] for n in data["nodes"]}
    assert {"core/seed", "core/save_image", "core/switch"} <= ids
    assert data["types"]["IMAGE"]["lineage"] == ["IMAGE", "TENSOR"]
    proc = cli("nodes")
    assert proc.returncode == 0 and "core/math v1" in proc.stdout
    proc = cli("plugins", "--json")
    assert proc.returncode == 0
    core = next(p for p in json.loads(proc.stdout) if p["name"] == "core")
    assert core["error"] is None and "core/seed" in core["nodes"]


def test_unknown_device_is_a_usage_error(demo):
    proc = cli("run", demo, "--device", "tpu9")
    assert proc.returncode == 2 and "device" in proc.stderr


def test_sweep_runs_every_combination_as_one_run(demo, tmp_path):
    proc = cli("run", demo, "--out", str(tmp_path), "--sweep", "seed.seed=1,2", "--sweep", "grid.columns=1,2")
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*.png"))) == 4
    assert "seed.seed=1 grid.columns=1; seed.seed=1 grid.columns=2; seed.seed=2 grid.columns=1" in proc.stderr
    # one run; the seed branch runs once per seed, only grid and save once per combination
    assert "run 2:" not in proc.stderr
    assert "seed 2/4, noise 2/4, smooth 2/4, image 2/4, grid 4/4, save 4/4" in proc.stderr
    proc = cli("run", demo, "--sweep", "seed.seed")
    assert proc.returncode == 2 and "expected NODE.INPUT=V1,V2" in proc.stderr
