"""Finding and loading plugins: the `nodegraph.plugins` entry points and plugin folders.

The built-in node library is one of those entry points (`core = "nodes"` in nodegraph's own
pyproject.toml): the engine imports no library code of its own, it loads the library exactly as it
loads a third party's. Only nodegraph's own distribution may provide the plugin named "core".

Each plugin's hooks run on their own: one that fails to import, declares an incompatible API
version or raises while registering is reported with its error and its partial registrations are
undone; every other plugin still loads.

A plugin cannot stall or end the host either. Its import, and then each of its registration hooks,
runs in a daemon thread with a time budget ($NODEGRAPH_PLUGIN_IMPORT_TIMEOUT seconds, default 10,
for each): past it the plugin is reported ("took longer than N s to import; skipped", "... to run
nodegraph_register_nodes; skipped") and never registered, even if its code finishes later (Python
cannot stop a thread, so it is left to finish or hang in the background). A hook registers through
a `PluginRegistrar` that is closed when the hook returns or overruns, before its partial
registrations are rolled back, so a late registration is refused instead of landing in the registry.
Hooks run one at a time; only the built-in library (trusted, and importing torch) runs in the
caller's thread with no budget. Any BaseException a plugin raises on import or in a hook
(SystemExit, KeyboardInterrupt, GeneratorExit...) is reported like any other error; only a real
Ctrl+C (SIGINT received while loading) still stops the program.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from .hooks import PROJECT, NodegraphSpec
from .registry import CORE_PLUGIN, Registry
from .settings import positive_env_number

API_VERSION = 1
"""The plugin API version this nodegraph provides. Plugins may declare `NODEGRAPH_API_VERSION`."""

ENTRY_POINT_GROUP = "nodegraph.plugins"
OWN_DISTRIBUTION = "nodegraph"
PLUGINS_ENV = "NODEGRAPH_PLUGINS"
IMPORT_TIMEOUT_ENV = "NODEGRAPH_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_IMPORT_TIMEOUT = 10.0
"""Seconds a plugin may take to import, and then to run each registration hook; generous for a
plugin importing heavy libraries of its own (torch itself is already imported by the built-in
library, which loads first and has no budget)."""


def import_timeout() -> float:
    """The budget in force: $NODEGRAPH_PLUGIN_IMPORT_TIMEOUT (read now) or DEFAULT_IMPORT_TIMEOUT;
    SettingError (a ValueError) when it is not a positive number."""
    return positive_env_number(IMPORT_TIMEOUT_ENV, DEFAULT_IMPORT_TIMEOUT, "seconds")


@dataclass
class PluginInfo:
    name: str
    source: str
    version: str = ""
    node_ids: list[str] = field(default_factory=list)
    type_names: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "version": self.version,
                "nodes": self.node_ids, "types": self.type_names, "error": self.error}


@dataclass
class PluginReport:
    plugins: list[PluginInfo] = field(default_factory=list)

    @property
    def failures(self) -> list[PluginInfo]:
        return [p for p in self.plugins if not p.ok]

    def namespace_owner(self, namespace: str) -> str | None:
        for plugin in self.plugins:
            if any(n.split("/", 1)[0] == namespace for n in plugin.node_ids):
                return plugin.name
        return None


def _short_error(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


class PluginTimeout(Exception):
    """A plugin's import or registration hook ran past its budget (it may still finish in the
    background; it is not registered)."""


def _call_with_budget(call: Callable[[], Any], budget: float, thread_name: str, doing: str) -> Any:
    """Run `call()` in a daemon thread and wait at most `budget` seconds for it.

    What the plugin raises (any BaseException) is re-raised here, in the caller's thread, so the caller
    reports it. A thread, not the caller, runs the plugin's code so that a plugin that sleeps or blocks
    cannot hold the caller past the budget; a daemon thread, so that it cannot keep the process alive
    at exit. `doing` completes the message "took longer than N s to ...".
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed to the caller, which contains it
            outcome["error"] = err

    thread = threading.Thread(target=run, name=thread_name, daemon=True)
    thread.start()
    thread.join(budget)
    if thread.is_alive():
        raise PluginTimeout(f"took longer than {budget:g} s to {doing}; skipped "
                            f"(${IMPORT_TIMEOUT_ENV} sets the budget)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class _UserInterrupts:
    """Tells a real Ctrl+C from a plugin raising KeyboardInterrupt itself.

    While plugins load, SIGINT (main thread only: Python delivers signals there) goes through a
    handler that records it before raising KeyboardInterrupt as usual; a KeyboardInterrupt with no
    SIGINT recorded came from plugin code and is contained like any other plugin error.
    """

    def __init__(self) -> None:
        self.seen = False

    @contextmanager
    def watching(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # no signal reaches this thread: every KeyboardInterrupt here is a plugin's
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            self.seen = True
            if callable(previous):
                previous(signum, frame)
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def reraise_if_user(self, err: BaseException) -> None:
        if isinstance(err, KeyboardInterrupt) and self.seen:
            raise err


def _check_api_version(plugin: Any, name: str) -> None:
    wanted = getattr(plugin, "NODEGRAPH_API_VERSION", None)
    if wanted is not None and int(wanted) != API_VERSION:
        raise RuntimeError(
            f"plugin {name!r} was written for nodegraph plugin API v{wanted}; "
            f"this nodegraph provides v{API_VERSION}"
        )


DIR_PLUGINS_PACKAGE = "nodegraph_dir_plugins"
"""The private package folder plugins are imported under (`nodegraph_dir_plugins.<name>`)."""


def _dir_plugins_package() -> None:
    """Put the private parent package in sys.modules. Relative imports need it: `from . import x`
    makes Python import `nodegraph_dir_plugins.<name>.x` and then look up its top-level package.
    It has no folder of its own (empty __path__), so nothing else can be imported through it."""
    if DIR_PLUGINS_PACKAGE not in sys.modules:
        spec = importlib.machinery.ModuleSpec(DIR_PLUGINS_PACKAGE, None, is_package=True)
        sys.modules[DIR_PLUGINS_PACKAGE] = importlib.util.module_from_spec(spec)


def _forget_module(name: str) -> None:
    """Drop `name` and its submodules from sys.modules, so a reload cannot pick up stale submodules
    (another folder's plugin of the same name, or an edited file)."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


def _import_path(path: Path) -> ModuleType:
    """Import a plugin file or package folder (relative imports included) under a private module name."""
    module_name = f"{DIR_PLUGINS_PACKAGE}.{path.stem}"
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(
            module_name, path / "__init__.py", submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    _dir_plugins_package()
    _forget_module(module_name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget_module(module_name)
        raise
    return module


def _dir_candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"plugins folder {folder} does not exist")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()):
            found.append(entry)
    return found


class PluginLoader:
    """Builds a Registry from the built-in nodes and every plugin that loads cleanly."""

    def __init__(self, plugin_dirs: Sequence[str | os.PathLike] = (), *, entry_points: bool = True,
                 disabled: Iterable[str] = (), only: Iterable[str] | None = None,
                 builtins: bool = True, import_budget: float | None = None) -> None:
        self.plugin_dirs = [Path(p) for p in plugin_dirs]
        env_dirs = os.environ.get(PLUGINS_ENV, "")
        self.plugin_dirs += [Path(p) for p in env_dirs.split(os.pathsep) if p]
        self.entry_points = entry_points
        self.disabled = set(disabled)
        self.only = set(only) if only is not None else None
        self.builtins = builtins
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(NodegraphSpec)
        self.report = PluginReport()
        self._info: dict[str, PluginInfo] = {}
        # seconds for a plugin's import and for each of its registration hooks (the name predates the latter)
        self.import_budget = import_timeout() if import_budget is None else import_budget
        self._interrupts = _UserInterrupts()

    def _wanted(self, name: str) -> bool:
        if name == CORE_PLUGIN:
            return True
        if name in self.disabled:
            return False
        return self.only is None or name in self.only

    def _add(self, name: str, source: str, load: Any, version: str = "") -> None:
        if not self._wanted(name):
            return
        info = PluginInfo(name=name, source=source, version=version)
        self.report.plugins.append(info)
        if name in self._info:
            info.error = f"a plugin named {name!r} is already loaded from {self._info[name].source}"
            return
        try:
            # the built-in library is trusted and imports torch: no thread, no budget
            plugin = load() if name == CORE_PLUGIN else _call_with_budget(
                load, self.import_budget, f"nodegraph-plugin-import:{name}", "import")
            _check_api_version(plugin, name)
            info.version = info.version or str(getattr(plugin, "__version__", ""))
            self.pm.register(plugin, name=name)
        except BaseException as err:  # noqa: BLE001 - a broken plugin must never stop the app
            self._interrupts.reraise_if_user(err)
            info.error = str(err) if isinstance(err, PluginTimeout) else _short_error(err)
            return
        self._info[name] = info

    def discover(self) -> None:
        found = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name != CORE_PLUGIN)
        for ep in found:
            dist = getattr(ep, "dist", None)
            dist_name = (getattr(dist, "name", "") or "").lower()
            if ep.name == CORE_PLUGIN:
                if dist_name != OWN_DISTRIBUTION:
                    self.report.plugins.append(PluginInfo(
                        ep.name, f"entry point {ep.value} of {dist_name or 'an unknown distribution'}",
                        error=f"only {OWN_DISTRIBUTION} provides the {CORE_PLUGIN!r} plugin"))
                    continue
                if not self.builtins:
                    continue
            elif not self.entry_points:
                continue
            self._add(ep.name, f"entry point {ep.value}", ep.load, version=getattr(dist, "version", "") or "")
        for folder in self.plugin_dirs:
            try:
                candidates = _dir_candidates(folder)
            except FileNotFoundError as err:
                self.report.plugins.append(PluginInfo(folder.name, f"folder {folder}", error=str(err)))
                continue
            for path in candidates:
                self._add(path.stem, f"folder {folder}", lambda p=path: _import_path(p))

    def _run_hook(self, hook_name: str, registry: Registry) -> None:
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        impls.sort(key=lambda impl: impl.plugin_name != CORE_PLUGIN)
        for impl in impls:
            name = impl.plugin_name
            info = self._info.get(name)
            if info is None or info.error:
                continue
            registrar = registry.registrar(name)
            try:
                if name == CORE_PLUGIN:  # trusted, and imports its modules here: no thread, no budget
                    impl.function(registry=registrar)
                else:
                    _call_with_budget(functools.partial(impl.function, registry=registrar), self.import_budget,
                                      f"nodegraph-plugin-register:{name}", f"run {hook_name}")
            except BaseException as err:  # noqa: BLE001 - SystemExit & co. from a plugin are its errors too
                registrar.close()  # before the rollback: a hook still running cannot register after it
                self._interrupts.reraise_if_user(err)
                registry.remove_plugin(name)
                info.error = str(err) if isinstance(err, PluginTimeout) else _short_error(err)
                if name == CORE_PLUGIN:
                    raise
            finally:
                registrar.close()

    def load(self, registry: Registry | None = None) -> Registry:
        registry = registry or Registry()
        with self._interrupts.watching():
            self.discover()
            for hook in ("nodegraph_register_types", "nodegraph_register_components", "nodegraph_register_nodes"):
                self._run_hook(hook, registry)
        for name, info in self._info.items():
            if info.error:
                registry.remove_plugin(name)  # what it registered before a later hook of it failed
                continue
            info.node_ids = sorted(n for n, t in registry.nodes.items() if t.plugin == name)
            info.type_names = sorted(t for t, src in registry.type_sources.items() if src == name)
        return registry


def load_registry(plugin_dirs: Sequence[str | os.PathLike] = (), **options: Any) -> tuple[Registry, PluginReport]:
    loader = PluginLoader(plugin_dirs, **options)
    registry = loader.load()
    return registry, loader.report


_default: tuple[Registry, PluginReport] | None = None


def default_registry() -> Registry:
    """The process-wide registry with built-ins, entry-point plugins and $NODEGRAPH_PLUGINS folders."""
    global _default
    if _default is None:
        _default = load_registry()
    return _default[0]


def default_report() -> PluginReport:
    default_registry()
    assert _default is not None
    return _default[1]
