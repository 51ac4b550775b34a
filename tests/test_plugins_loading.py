"""Plugin loading and isolation: broken plugins are reported and skipped, never fatal; clashes name both sides.

Folder plugins are written into a temporary folder and loaded with `--plugins-dir` / `load_registry(dirs)`.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodegraph import API_VERSION, RegistryError, Session, Workflow
from nodegraph.plugins import load_registry

ROOT = Path(__file__).resolve().parent.parent

GOOD = '''
from nodegraph import SocketType, hookimpl, node

__version__ = "2.5"
NODEGRAPH_API_VERSION = 1
GREETING = SocketType("GREETING", str, "#ffffff", description="A greeting.")

@node("good/greet", category="text")
def greet(name: str = "world") -> GREETING:
    """'hello, <name>'."""
    return f"hello, {name}"

@hookimpl
def nodegraph_register_types(registry):
    registry.add_type(GREETING)

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(greet)
'''

BROKEN_IMPORT = '''
import this_module_does_not_exist_anywhere
'''

BROKEN_REGISTER = '''
from nodegraph import SocketType, hookimpl, node

HALF = SocketType("HALF_DONE", None)

@node("broken_register/first", category="test")
def first() -> int:
    """Registered before the failure; must be undone."""
    return 1

@hookimpl
def nodegraph_register_types(registry):
    registry.add_type(HALF)

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(first)
    raise RuntimeError("registration exploded")
'''

OLD_API = '''
from nodegraph import hookimpl, node

NODEGRAPH_API_VERSION = 99

@node("old_api/thing", category="test")
def thing() -> int:
    """Never registered."""
    return 0

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(thing)
'''

CLASH = '''
from nodegraph import hookimpl, node

@node("good/greet", category="text")
def greet() -> str:
    """Same id as the good plugin's node."""
    return "hi"

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(greet)
'''

CORE_SQUATTER = '''
from nodegraph import hookimpl, node

@node("core/seed", category="test")
def seed() -> int:
    """Tries to replace a built-in node."""
    return 4

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(seed)
'''

TYPE_CLASH = '''
from nodegraph import SocketType, hookimpl

@hookimpl
def nodegraph_register_types(registry):
    registry.add_type(SocketType("GREETING", str))
'''


def write_plugins(folder: Path, **sources: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """One good plugin among broken ones (alphabetical load order: broken ones load before and after it)."""
    return write_plugins(tmp_path / "plugins", good=GOOD, broken_import=BROKEN_IMPORT,
                         broken_register=BROKEN_REGISTER, old_api=OLD_API)


def by_name(report):
    return {p.name: p for p in report.plugins}


def test_broken_plugins_are_reported_and_the_rest_loads(mixed):
    registry, report = load_registry([mixed], entry_points=False)
    plugins = by_name(report)
    assert plugins["good"].ok and plugins["good"].node_ids == ["good/greet"]
    assert plugins["good"].type_names == ["GREETING"] and plugins["good"].version == "2.5"
    assert plugins["good"].source == f"folder {mixed}"
    assert "ModuleNotFoundError" in plugins["broken_import"].error
    assert "this_module_does_not_exist_anywhere" in plugins["broken_import"].error
    assert "RuntimeError: registration exploded" in plugins["broken_register"].error
    assert "broken_register.py" in plugins["broken_register"].error  # where it failed
    # partial registrations are undone: the node and the socket type it added before failing
    assert "broken_register/first" not in registry.nodes
    assert "HALF_DONE" not in registry.types
    assert "core/seed" in registry.nodes and registry.get("good/greet").plugin == "good"


def test_api_version_mismatch_is_refused_with_a_clear_message(mixed):
    registry, report = load_registry([mixed], entry_points=False)
    error = by_name(report)["old_api"].error
    assert f"written for nodegraph plugin API v99; this nodegraph provides v{API_VERSION}" in error
    assert "old_api/thing" not in registry.nodes


def test_duplicate_node_id_names_both_plugins(tmp_path):
    folder = write_plugins(tmp_path / "p", good=GOOD, zz_clash=CLASH)
    registry, report = load_registry([folder], entry_points=False)
    error = by_name(report)["zz_clash"].error
    assert "RegistryError" in error and "'good/greet'" in error and "'good'" in error and "'zz_clash'" in error
    assert registry.get("good/greet").plugin == "good"  # the first one keeps it


def test_core_namespace_is_reserved(tmp_path):
    folder = write_plugins(tmp_path / "p", squatter=CORE_SQUATTER)
    registry, report = load_registry([folder], entry_points=False)
    error = by_name(report)["squatter"].error
    assert "may not register 'core/seed'" in error and "reserved for built-in nodes" in error
    assert registry.get("core/seed").plugin == "core"


def test_socket_type_clash_names_both_plugins(tmp_path):
    folder = write_plugins(tmp_path / "p", good=GOOD, zz_types=TYPE_CLASH)
    registry, report = load_registry([folder], entry_points=False)
    error = by_name(report)["zz_types"].error
    assert "socket type GREETING registered twice" in error and "'good'" in error and "'zz_types'" in error
    assert registry.type_sources["GREETING"] == "good"


def test_disable_and_only_select_plugins(mixed):
    _, report = load_registry([mixed], entry_points=False, disabled=["broken_import", "old_api"])
    assert set(by_name(report)) == {"core", "good", "broken_register"}
    registry, report = load_registry([mixed], entry_points=False, only=["good"])
    assert set(by_name(report)) == {"core", "good"} and not report.failures
    assert "good/greet" in registry.nodes and "core/seed" in registry.nodes  # built-ins always load


def test_a_missing_plugin_folder_is_reported_not_fatal(tmp_path):
    registry, report = load_registry([tmp_path / "nowhere"], entry_points=False)
    assert "does not exist" in report.failures[0].error and "core/seed" in registry.nodes


def test_folder_plugin_node_runs_in_a_workflow(mixed, tmp_path):
    registry, _ = load_registry([mixed], entry_points=False)
    workflow = Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "greet",
                                   "nodes": {"g": {"type": "good/greet", "inputs": {"name": "plugins"}}}})
    result = Session(registry, device="cpu", output_dir=tmp_path).run(workflow, outputs=["g"])
    assert result.outputs["g"] == {"greeting": "hello, plugins"}


PACKAGE_INIT = '''
from nodegraph import hookimpl, node

from . import helpers
from .helpers import suffix
from .sub.deep import shout


@node("relpkg/word", category="test")
def word(text: str = "hi") -> str:
    return shout(text) + suffix() + helpers.MARK


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(word)
'''


def write_package(folder: Path, mark: str) -> Path:
    """A package plugin `relpkg` whose modules import each other relatively (`.`, `..`, a subpackage)."""
    package = folder / "relpkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(PACKAGE_INIT)
    (package / "helpers.py").write_text(f"MARK = {mark!r}\n\ndef suffix():\n    return '!'\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("from .. import helpers\n\ndef shout(text):\n"
                                             "    return text.upper() + helpers.MARK\n")
    return folder


def run_word(registry, tmp_path: Path) -> str:
    workflow = Workflow.from_dict({"nodes": {"w": {"type": "relpkg/word", "inputs": {"text": "hey"}}}})
    return Session(registry, device="cpu", output_dir=tmp_path / "out").run(workflow, outputs=["w"]).value("w")


def test_a_package_plugin_with_relative_imports_loads(tmp_path):
    folder = write_package(tmp_path / "plugins", mark="#")
    registry, report = load_registry([folder], entry_points=False)
    assert by_name(report)["relpkg"].ok, by_name(report)["relpkg"].error
    assert run_word(registry, tmp_path) == "HEY#!#"


def test_reloading_a_package_plugin_never_reuses_another_folders_submodules(tmp_path):
    """Two folders with a package of the same name, loaded one after the other in one process: the
    second must import its own helpers, not find the first one's still in sys.modules."""
    load_registry([write_package(tmp_path / "first", mark="1")], entry_points=False)
    registry, report = load_registry([write_package(tmp_path / "second", mark="2")], entry_points=False)
    assert by_name(report)["relpkg"].ok, by_name(report)["relpkg"].error
    assert run_word(registry, tmp_path) == "HEY2!2"


def test_registry_refuses_core_ids_from_plugins_directly():
    registry, _ = load_registry(entry_points=False)
    mine = registry.registrar("mine")
    with pytest.raises(RegistryError, match="reserved for built-in nodes"):
        mine.add_node(registry.get("core/seed").fn)
    with pytest.raises(AttributeError):
        mine.plugin = "core"  # a plugin cannot rename itself to the built-in library
    with pytest.raises(RegistryError, match="registered twice: by 'core' and by 'mine'"):
        mine.add_component("solver", "euler", registry.component("solver", "euler"))


# --- the CLI, in a subprocess -------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NODEGRAPH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "nodegraph.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_cli_plugins_lists_failures_and_still_works(mixed):
    proc = cli("plugins", "--plugins-dir", str(mixed))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"good 2.5 [folder {mixed}]: 1 nodes" in lines and "    good/greet" in lines
    failed = {line.split(" ", 1)[0]: line for line in lines if "FAILED" in line}
    assert set(failed) == {"broken_import", "broken_register", "old_api"}
    assert "registration exploded" in failed["broken_register"] and "API v99" in failed["old_api"]


def test_cli_runs_a_workflow_next_to_broken_plugins(mixed, tmp_path):
    wf = tmp_path / "greet.json"
    wf.write_text(json.dumps({"format": "nodegraph/workflow", "version": 1, "name": "greet",
                              "nodes": {"g": {"type": "good/greet", "inputs": {"name": "cli"}}}}))
    proc = cli("run", str(wf), "--plugins-dir", str(mixed), "--disable-plugin", "old_api", "--out", str(tmp_path),
               "--outputs", "g", "--device", "cpu", "--events", "none")
    assert proc.returncode == 0, proc.stderr
    assert "g.greeting = 'hello, cli'" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: plugin")]
    assert len(warnings) == 2 and any("'broken_import'" in w for w in warnings)
    assert not any("old_api" in w for w in warnings)  # disabled: not loaded, not reported
