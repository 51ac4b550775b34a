"""`nodegraph plugin new`: the generated package installs, loads through its entry point and passes its tests."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nodegraph.scaffold import PluginNames, ScaffoldError, new_plugin

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("name", "namespace", "package", "distribution"), [
    ("my-nodes", "my_nodes", "nodegraph_my_nodes", "nodegraph-my-nodes"),
    ("Fancy_Sampler2", "fancy_sampler2", "nodegraph_fancy_sampler2", "nodegraph-fancy-sampler2"),
    ("nodegraph-extra", "extra", "nodegraph_extra", "nodegraph-extra"),
])
def test_names_follow_the_plugin_name(name, namespace, package, distribution):
    assert PluginNames.from_name(name) == PluginNames(namespace, package, distribution)


@pytest.mark.parametrize("name", ["core", "2fast", "bad name", "x/y", ""])
def test_bad_or_reserved_names_are_refused(name, tmp_path):
    with pytest.raises(ScaffoldError):
        new_plugin(name, tmp_path)
    assert not any(tmp_path.iterdir())


def test_generated_files_and_entry_point(tmp_path):
    root = new_plugin("my-nodes", tmp_path)
    assert root == tmp_path / "nodegraph-my-nodes"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "nodegraph_my_nodes/__init__.py", "nodegraph_my_nodes/nodes.py", "pyproject.toml",
                     "tests/test_my_nodes.py"]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["name"] == "nodegraph-my-nodes"
    assert project["project"]["entry-points"]["nodegraph.plugins"] == {"my_nodes": "nodegraph_my_nodes"}
    init = (root / "nodegraph_my_nodes" / "__init__.py").read_text()
    assert "NODEGRAPH_API_VERSION = 1" in init and "def nodegraph_register_components(registry)" in init
    assert "from nodes.api import TENSOR" in (root / "nodegraph_my_nodes" / "nodes.py").read_text()
    for path in root.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")
    with pytest.raises(ScaffoldError, match="already exists"):
        new_plugin("my-nodes", tmp_path)


def test_cli_scaffold_installs_loads_and_passes_its_own_tests(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NODEGRAPH_PLUGINS", None)
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "plugin", "new", "hello-world", "--dir",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    root = tmp_path / "nodegraph-hello-world"
    assert f"created {root}" in proc.stdout and "hello_world/..." in proc.stdout
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(root)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                           str(root / "tests")], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout and "skipped" not in proc.stdout  # incl. loading through the entry point
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "plugin", "new", "hello-world", "--dir",
                           str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr
