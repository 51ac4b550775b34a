"""No traceback for a user mistake anywhere in the CLI (issue 15, item 7): exit 2 and one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodegraph.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = str(ROOT / "workflows" / "default.json")


def one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) if argv[0] == "ui" else _no_exit():
        code = main(argv)
    err = capsys.readouterr().err
    if argv[0] != "ui":
        assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, err
    return lines[0]


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_port_out_of_range(capsys):
    with pytest.raises(SystemExit) as info:
        main(["ui", "--port", "99999"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "between 1 and 65535" in err


def test_validate_a_directory(capsys, tmp_path):
    assert "is a folder" in one_line_error(capsys, ["validate", str(tmp_path)])


def test_validate_dev_zero(capsys):
    assert "larger than the limit" in one_line_error(capsys, ["validate", "/dev/zero"])


def test_unreadable_workflow(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    assert "cannot read workflow" in one_line_error(capsys, ["validate", str(tmp_path / "file" / "wf.json")])


def test_outputs_naming_no_node(capsys, tmp_path):
    line = one_line_error(capsys, ["run", DEFAULT, "--outputs", "ghost", "--out", str(tmp_path), "--device", "cpu"])
    assert "ghost" in line and "no such node" in line


def test_a_deeply_nested_set_value(capsys, tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    line = one_line_error(capsys, ["run", DEFAULT, "--set", f"noise.shape={deep}", "--out", str(tmp_path)])
    assert "nested too deeply" in line


def test_a_deeply_nested_workflow_file(capsys, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"nodes": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "malformed JSON" in one_line_error(capsys, ["validate", str(path)])


def test_duplicate_node_ids_in_a_workflow_file(capsys, tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"nodes": {\n"a": {"type": "core/seed"},\n"a": {"type": "core/seed"}}}')
    assert "duplicate key 'a' at line 3" in one_line_error(capsys, ["validate", str(path)])


def test_a_write_outside_the_output_folder_is_refused_by_validate(capsys, tmp_path):
    workflow = json.loads(Path(DEFAULT).read_text())
    saves = [n for n, spec in workflow["nodes"].items() if spec["type"] == "core/save_image"]
    assert saves
    workflow["nodes"][saves[0]]["inputs"]["folder"] = "/etc"
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(workflow))
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "path_refused" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["run", DEFAULT, "--repeat", "0"], ["run", DEFAULT, "--threads", "x"],
                                  ["run", DEFAULT, "--cache-mb", "-5"], ["nodes", "--bogus"]])
def test_bad_arguments_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_debug_prints_the_traceback_of_a_node_failure(tmp_path):
    path = tmp_path / "load.json"
    path.write_text(json.dumps({"nodes": {"load": {"type": "core/load_image", "inputs": {"path": "absent.png"}}}}))
    args = [sys.executable, "-m", "nodegraph.cli", "run", str(path), "--device", "cpu", "--events", "none",
            "--out", str(tmp_path / "out")]
    quiet = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    loud = subprocess.run([*args, "--debug"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert quiet.returncode == loud.returncode != 0, quiet.stderr
    assert "Traceback" not in quiet.stderr and "--debug" in quiet.stderr
    assert "no image file" in quiet.stderr
    assert "Traceback" in loud.stderr and "FileNotFoundError" in loud.stderr


SETTINGS = {"NODEGRAPH_PLUGIN_IMPORT_TIMEOUT": "seconds", "NODEGRAPH_MAX_PARAMETERS": "parameters"}


@pytest.mark.parametrize("variable", sorted(SETTINGS))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_non_numeric_setting_is_one_line_naming_it(tmp_path, variable, command):
    """Checked at start, before anything runs: not a traceback, not a node failure minutes later."""
    args = [sys.executable, "-m", "nodegraph.cli", command, DEFAULT, "--out", str(tmp_path / "out")]
    if command == "run":
        args += ["--device", "cpu", "--events", "none"]
    env = {**os.environ, variable: "soon"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: ${variable} must be a positive number of {SETTINGS[variable]}, "
                                        "got 'soon'"]
    assert proc.stdout == ""


@pytest.mark.parametrize("variable", sorted(SETTINGS))
@pytest.mark.parametrize("command", [["nodes"], ["plugins"]])
def test_every_command_checks_the_settings(capsys, monkeypatch, variable, command):
    monkeypatch.setenv(variable, "-1")
    assert variable in one_line_error(capsys, command)


def test_a_plugins_own_setting_is_checked_too(capsys, monkeypatch, tmp_path):
    """A plugin registers the reader of each variable it reads as a "setting" component."""
    (tmp_path / "limits.py").write_text(
        "from nodegraph import SETTING_COMPONENT, hookimpl, positive_env_number\n\n"
        "def batch_limit():\n    return positive_env_number('LIMITS_MAX_BATCH', 64, 'images')\n\n"
        "@hookimpl\ndef nodegraph_register_components(registry):\n"
        "    registry.add_component(SETTING_COMPONENT, 'LIMITS_MAX_BATCH', batch_limit)\n")
    assert main(["nodes", "--plugins-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("LIMITS_MAX_BATCH", "many")
    line = one_line_error(capsys, ["nodes", "--plugins-dir", str(tmp_path)])
    assert line == "error: $LIMITS_MAX_BATCH must be a positive number of images, got 'many'"
