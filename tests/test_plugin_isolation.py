"""Plugins cannot stall or end the host: an import or a registration hook past its time budget is reported
and skipped (and never registered, even when it finishes later); SystemExit, KeyboardInterrupt and GeneratorExit from a
plugin are reported like any error; only a real Ctrl+C (SIGINT) still stops loading.

The slow plugins block on a threading.Event the test owns (in-process) or forever (in a CLI
subprocess, whose daemon import thread dies with it): no test sleeps.
"""

import os
import sys
import threading
import time
import types

import pytest

from nodegraph import RegistryError
from nodegraph.plugins import IMPORT_TIMEOUT_ENV, import_timeout, load_registry

from .test_plugins_loading import GOOD, by_name, cli, write_plugins

GATE = "_nodegraph_test_plugin_gate"

SLOW = f'''
import sys
from nodegraph import hookimpl, node

sys.modules["{GATE}"].entered.set()
sys.modules["{GATE}"].release.wait(60)  # without a budget, loading would wait here

@node("slow/thing", category="test")
def thing() -> int:
    return 1

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(thing)
'''

INTERRUPTS_ON_IMPORT = '''
raise KeyboardInterrupt("a plugin pretending to be Ctrl+C")
'''

EXITS_ON_IMPORT = '''
raise GeneratorExit("closing nothing")
'''

EXITS_IN_HOOK = '''
from nodegraph import hookimpl, node

@node("exits/half", category="test")
def half() -> int:
    return 1

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(half)
    raise SystemExit(3)
'''

INTERRUPTS_IN_HOOK = '''
from nodegraph import hookimpl

@hookimpl
def nodegraph_register_types(registry):
    raise KeyboardInterrupt
'''

SLOW_HOOK = f'''
import sys
from nodegraph import SocketType, hookimpl, node

STALL = SocketType("STALL", int, "#000000", description="Registered before the hook stalls; rolled back.")

@node("stall/first", category="test")
def first() -> STALL:
    return 1

@node("stall/late", category="test")
def late() -> int:
    return 2

@hookimpl
def nodegraph_register_types(registry):
    registry.add_type(STALL)

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(first)
    gate = sys.modules["{GATE}"]
    gate.entered.set()
    gate.release.wait(60)  # without a budget, loading would wait here
    try:
        registry.add_node(late)
    except Exception as err:
        gate.refused = err
'''

FOREVER_HOOK = '''
import threading
from nodegraph import hookimpl

@hookimpl
def nodegraph_register_components(registry):
    threading.Event().wait()
'''

AFTER = GOOD.replace("good/", "after/").replace("GREETING", "AFTER_GREETING")

FOREVER = '''
import threading
threading.Event().wait()
'''


@pytest.fixture()
def gate():
    """What the slow plugin waits on: `entered` (it is importing), `release` (set by the test, or at teardown)."""
    module = types.ModuleType(GATE)
    module.entered, module.release = threading.Event(), threading.Event()
    sys.modules[GATE] = module
    yield module
    module.release.set()
    for thread in threading.enumerate():
        if thread.name.startswith(("nodegraph-plugin-import:", "nodegraph-plugin-register:")):
            thread.join(30)
    del sys.modules[GATE]


def test_a_plugin_past_its_import_budget_is_skipped_and_never_registered(tmp_path, gate, monkeypatch):
    folder = write_plugins(tmp_path / "plugins", good=GOOD, slow=SLOW, zzz_after=AFTER)
    monkeypatch.setenv(IMPORT_TIMEOUT_ENV, "0.5")
    start = time.monotonic()
    registry, report = load_registry([folder], entry_points=False)
    elapsed = time.monotonic() - start
    assert elapsed < 30  # the plugin waits up to 60 s
    assert gate.entered.is_set()
    plugins = by_name(report)
    assert plugins["slow"].error.startswith("took longer than 0.5 s to import; skipped")
    assert IMPORT_TIMEOUT_ENV in plugins["slow"].error
    assert plugins["good"].ok and plugins["zzz_after"].ok  # the ones before and after it load
    assert {"good/greet", "after/greet"} <= set(registry.nodes)

    # the import finishes in the background; its hooks must still not count
    gate.release.set()
    [thread] = [t for t in threading.enumerate() if t.name == "nodegraph-plugin-import:slow"]
    thread.join(30)
    assert not thread.is_alive()
    assert "slow/thing" not in registry.nodes
    assert not plugins["slow"].ok and plugins["slow"].node_ids == []


def test_a_registration_hook_past_its_budget_is_skipped_and_rolled_back(tmp_path, gate, monkeypatch):
    folder = write_plugins(tmp_path / "plugins", good=GOOD, stall=SLOW_HOOK, zzz_after=AFTER)
    monkeypatch.setenv(IMPORT_TIMEOUT_ENV, "0.5")
    start = time.monotonic()
    registry, report = load_registry([folder], entry_points=False)
    assert time.monotonic() - start < 30  # the hook waits up to 60 s
    assert gate.entered.is_set()
    plugins = by_name(report)
    assert plugins["stall"].error.startswith("took longer than 0.5 s to run nodegraph_register_nodes; skipped")
    assert IMPORT_TIMEOUT_ENV in plugins["stall"].error
    assert "stall/first" not in registry.nodes and "STALL" not in registry.types  # rolled back
    assert plugins["good"].ok and plugins["zzz_after"].ok
    assert {"good/greet", "after/greet"} <= set(registry.nodes)

    # the hook goes on in the background; what it registers from now on is refused
    gate.release.set()
    [thread] = [t for t in threading.enumerate() if t.name == "nodegraph-plugin-register:stall"]
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(gate.refused, RegistryError) and "refused" in str(gate.refused)
    assert "stall/late" not in registry.nodes and "stall/first" not in registry.nodes
    assert plugins["stall"].node_ids == [] and plugins["stall"].type_names == []


def test_a_registrar_refuses_registrations_once_closed():
    registry, _ = load_registry(entry_points=False)
    registrar = registry.registrar("late")
    registrar.close()
    with pytest.raises(RegistryError, match="after its hook ended"):
        registrar.add_component("solver", "late_euler", object())
    assert "late_euler" not in registry.component_names("solver")


def test_the_budget_is_configurable():
    assert import_timeout() == 10.0 or IMPORT_TIMEOUT_ENV in os.environ
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(IMPORT_TIMEOUT_ENV, "2.5")
        assert import_timeout() == 2.5
        patch.setenv(IMPORT_TIMEOUT_ENV, "-1")
        with pytest.raises(ValueError, match=f"{IMPORT_TIMEOUT_ENV} must be a positive number of seconds"):
            import_timeout()


def test_base_exceptions_from_plugins_are_reported_and_contained(tmp_path):
    folder = write_plugins(tmp_path / "plugins", good=GOOD, interrupts=INTERRUPTS_ON_IMPORT,
                           exits_import=EXITS_ON_IMPORT, exits_hook=EXITS_IN_HOOK, interrupts_hook=INTERRUPTS_IN_HOOK)
    try:
        registry, report = load_registry([folder], entry_points=False)
    except BaseException as err:  # noqa: BLE001 - report it as this test's failure, not the session's end
        pytest.fail(f"a plugin's {type(err).__name__} escaped the loader")
    plugins = by_name(report)
    assert plugins["interrupts"].error.startswith("KeyboardInterrupt: a plugin pretending to be Ctrl+C")
    assert plugins["exits_import"].error.startswith("GeneratorExit: closing nothing")
    assert plugins["exits_hook"].error.startswith("SystemExit: 3")
    assert plugins["interrupts_hook"].error.startswith("KeyboardInterrupt")
    assert "exits/half" not in registry.nodes  # what it registered before exiting is undone
    assert plugins["good"].ok and "good/greet" in registry.nodes


def test_a_real_ctrl_c_while_loading_still_stops(tmp_path, gate):
    """SIGINT delivered while a plugin imports is the user's: it is not contained."""
    sender = f'''
import os, signal, sys
os.kill(os.getpid(), signal.SIGINT)
sys.modules["{GATE}"].release.wait(60)
'''
    folder = write_plugins(tmp_path / "plugins", good=GOOD, sender=sender)
    with pytest.raises(KeyboardInterrupt):
        load_registry([folder], entry_points=False, import_budget=30)


def test_cli_plugins_returns_promptly_next_to_a_hanging_and_an_exiting_plugin(tmp_path, monkeypatch):
    folder = write_plugins(tmp_path / "plugins", good=GOOD, forever=FOREVER, interrupts=INTERRUPTS_ON_IMPORT,
                           exits_hook=EXITS_IN_HOOK, forever_hook=FOREVER_HOOK)
    monkeypatch.setenv(IMPORT_TIMEOUT_ENV, "0.5")
    proc = cli("plugins", "--plugins-dir", str(folder))  # a hang here raises TimeoutExpired
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"good 2.5 [folder {folder}]: 1 nodes" in lines
    failed = {line.split(" ", 1)[0]: line for line in lines if "FAILED" in line}
    assert set(failed) == {"forever", "interrupts", "exits_hook", "forever_hook"}, proc.stdout
    assert "took longer than 0.5 s to import; skipped" in failed["forever"]
    assert "took longer than 0.5 s to run nodegraph_register_components; skipped" in failed["forever_hook"]
    assert "KeyboardInterrupt" in failed["interrupts"] and "SystemExit: 3" in failed["exits_hook"]
