"""The registry: every socket type, component and node type known to this process, and which plugin
gave it.

Plugins never hold the registry itself: each hook receives a `PluginRegistrar`, the registry seen
through that plugin's fixed name, so nothing a plugin registers can be recorded as another's (in
particular not as "core", whose namespace is reserved for the built-in library).
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterable
from types import MappingProxyType, ModuleType
from typing import Any

from .node import NodeType
from .types import BUILTIN_TYPES, SocketType

CORE_PLUGIN = "core"
RESERVED_NAMESPACES = frozenset({"core"})


class RegistryError(ValueError):
    """A clash or malformed registration (duplicate id, shadowed core id, unknown type)."""


class Registry:
    def __init__(self) -> None:
        self.types: dict[str, SocketType] = {}
        self.type_sources: dict[str, str] = {}
        self.nodes: dict[str, NodeType] = {}
        self.components: dict[str, dict[str, Any]] = {}
        self.component_sources: dict[tuple[str, str], str] = {}
        for socket in BUILTIN_TYPES:
            self.add_type(socket)

    def registrar(self, plugin: str) -> PluginRegistrar:
        """The registry as the plugin named `plugin` sees it in its hooks."""
        return PluginRegistrar(self, plugin)

    # socket types -------------------------------------------------------------------------------
    def add_type(self, socket: SocketType, *, plugin: str = CORE_PLUGIN) -> SocketType:
        known = self.types.get(socket.name)
        if known is not None:
            if known is socket:
                return socket
            raise RegistryError(
                f"socket type {socket.name} registered twice: by {self.type_sources[socket.name]!r} "
                f"and by {plugin!r}"
            )
        if socket.parent is not None and socket.parent.name not in self.types:
            raise RegistryError(f"socket type {socket.name}: parent {socket.parent.name} is not registered")
        self.types[socket.name] = socket
        self.type_sources[socket.name] = plugin
        return socket

    # components ---------------------------------------------------------------------------------
    def add_component(self, kind: str, name: str, value: Any, *, plugin: str = CORE_PLUGIN) -> Any:
        """Register `value` as the component `name` of `kind` (a solver, a path, an architecture...)."""
        if not kind or not name or not isinstance(kind, str) or not isinstance(name, str):
            raise RegistryError(f"a component needs a kind and a name, got {kind!r}, {name!r}")
        owner = self.component_sources.get((kind, name))
        if owner is not None:
            raise RegistryError(f"{kind} {name!r} registered twice: by {owner!r} and by {plugin!r}")
        self.components.setdefault(kind, {})[name] = value
        self.component_sources[(kind, name)] = plugin
        return value

    def component(self, kind: str, name: str) -> Any:
        """The component `name` of `kind`; a LookupError lists the registered names."""
        found = self.components.get(kind, {})
        if name not in found:
            close = difflib.get_close_matches(name, list(found), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            raise LookupError(f"unknown {kind} {name!r}{hint}; registered: {sorted(found)}")
        return found[name]

    def component_names(self, kind: str) -> list[str]:
        """Registered names of `kind`, in registration order (built-ins first)."""
        return list(self.components.get(kind, {}))

    def remove_plugin(self, plugin: str) -> None:
        """Undo everything `plugin` registered (a plugin whose hook failed part-way)."""
        for node_id in [n for n, t in self.nodes.items() if t.plugin == plugin]:
            del self.nodes[node_id]
        for (kind, name), owner in list(self.component_sources.items()):
            if owner == plugin:
                del self.components[kind][name]
                del self.component_sources[(kind, name)]
        used = {s.socket.name for t in self.nodes.values() for s in [*t.inputs.values(), *t.outputs.values()]}
        for type_name in [t for t, src in self.type_sources.items() if src == plugin and t not in used]:
            del self.types[type_name]
            del self.type_sources[type_name]

    # node types ---------------------------------------------------------------------------------
    def add_node(self, fn_or_type: Callable[..., Any] | NodeType, *, plugin: str = CORE_PLUGIN) -> NodeType:
        node_type = fn_or_type if isinstance(fn_or_type, NodeType) else getattr(fn_or_type, "node_type", None)
        if not isinstance(node_type, NodeType):
            raise RegistryError(f"{fn_or_type!r} is not a node (decorate it with @node)")
        if plugin != CORE_PLUGIN and node_type.namespace in RESERVED_NAMESPACES:
            raise RegistryError(
                f"plugin {plugin!r} may not register {node_type.id!r}: namespace "
                f"{node_type.namespace!r} is reserved for built-in nodes"
            )
        known = self.nodes.get(node_type.id)
        if known is not None:
            raise RegistryError(
                f"node id {node_type.id!r} registered twice: by plugin {known.plugin!r} and by {plugin!r}"
            )
        for spec in [*node_type.inputs.values(), *node_type.outputs.values()]:
            if spec.socket.name not in self.types:
                raise RegistryError(f"node {node_type.id!r} uses unregistered socket type {spec.socket.name}")
        node_type.plugin = plugin
        self.nodes[node_type.id] = node_type
        return node_type

    def add_module(self, module: ModuleType, *, plugin: str = CORE_PLUGIN) -> list[NodeType]:
        """Register every @node function defined in `module`, in definition order."""
        found = [v for v in vars(module).values() if isinstance(getattr(v, "node_type", None), NodeType)
                 and getattr(v, "__module__", None) == module.__name__]
        return [self.add_node(fn, plugin=plugin) for fn in found]

    def add_nodes(self, fns: Iterable[Callable[..., Any]], *, plugin: str = CORE_PLUGIN) -> list[NodeType]:
        return [self.add_node(fn, plugin=plugin) for fn in fns]

    # lookups ------------------------------------------------------------------------------------
    def get(self, node_id: str) -> NodeType:
        return self.nodes[node_id]

    def suggest(self, node_id: str) -> list[str]:
        return difflib.get_close_matches(node_id, list(self.nodes), n=3, cutoff=0.5)

    def socket(self, name: str) -> SocketType:
        return self.types[name]

    def by_plugin(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for node_id, node_type in self.nodes.items():
            grouped.setdefault(node_type.plugin, []).append(node_id)
        return grouped


class PluginRegistrar:
    """What a plugin's hooks receive: registration under the plugin's own, fixed name, and lookups.

    The loader closes it when the hook returns or overruns its time budget: a hook still running in a
    background thread (or a thread it started) cannot register anything after its plugin was rolled back.
    """

    __slots__ = ("__registry", "__plugin", "__lock", "__closed")

    def __init__(self, registry: Registry, plugin: str) -> None:
        self.__registry = registry
        self.__plugin = plugin
        self.__lock = threading.Lock()
        self.__closed = False

    @property
    def plugin(self) -> str:
        return self.__plugin

    def close(self) -> None:
        """Refuse every later registration (waits for one in progress, so none lands after this)."""
        with self.__lock:
            self.__closed = True

    def __write(self, add: Callable[..., Any], *args: Any) -> Any:
        with self.__lock:
            if self.__closed:
                raise RegistryError(f"plugin {self.__plugin!r} registered after its hook ended (past its "
                                    "time budget, or from another thread); refused")
            return add(*args, plugin=self.__plugin)

    def add_type(self, socket: SocketType) -> SocketType:
        return self.__write(self.__registry.add_type, socket)

    def add_component(self, kind: str, name: str, value: Any) -> Any:
        return self.__write(self.__registry.add_component, kind, name, value)

    def add_node(self, fn_or_type: Callable[..., Any] | NodeType) -> NodeType:
        return self.__write(self.__registry.add_node, fn_or_type)

    def add_module(self, module: ModuleType) -> list[NodeType]:
        return self.__write(self.__registry.add_module, module)

    def add_nodes(self, fns: Iterable[Callable[..., Any]]) -> list[NodeType]:
        return self.__write(self.__registry.add_nodes, fns)

    def socket(self, name: str) -> SocketType:
        return self.__registry.socket(name)

    def component(self, kind: str, name: str) -> Any:
        return self.__registry.component(kind, name)

    def component_names(self, kind: str) -> list[str]:
        return self.__registry.component_names(kind)

    @property
    def types(self) -> MappingProxyType[str, SocketType]:
        return MappingProxyType(self.__registry.types)

    @property
    def nodes(self) -> MappingProxyType[str, NodeType]:
        return MappingProxyType(self.__registry.nodes)
