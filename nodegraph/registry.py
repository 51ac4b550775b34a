"""The registry: every socket type and node type known to this process, and which plugin gave it."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from types import ModuleType
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
        self.current_plugin = CORE_PLUGIN
        for socket in BUILTIN_TYPES:
            self.add_type(socket)

    # socket types -------------------------------------------------------------------------------
    def add_type(self, socket: SocketType) -> SocketType:
        known = self.types.get(socket.name)
        if known is not None:
            if known is socket:
                return socket
            raise RegistryError(
                f"socket type {socket.name} registered twice: by {self.type_sources[socket.name]!r} "
                f"and by {self.current_plugin!r}"
            )
        if socket.parent is not None and socket.parent.name not in self.types:
            raise RegistryError(f"socket type {socket.name}: parent {socket.parent.name} is not registered")
        self.types[socket.name] = socket
        self.type_sources[socket.name] = self.current_plugin
        return socket

    # node types ---------------------------------------------------------------------------------
    def add_node(self, fn_or_type: Callable[..., Any] | NodeType) -> NodeType:
        node_type = fn_or_type if isinstance(fn_or_type, NodeType) else getattr(fn_or_type, "node_type", None)
        if not isinstance(node_type, NodeType):
            raise RegistryError(f"{fn_or_type!r} is not a node (decorate it with @node)")
        plugin = self.current_plugin
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

    def add_module(self, module: ModuleType) -> list[NodeType]:
        """Register every @node function defined in `module`, in definition order."""
        found = [v for v in vars(module).values() if isinstance(getattr(v, "node_type", None), NodeType)
                 and getattr(v, "__module__", None) == module.__name__]
        return [self.add_node(fn) for fn in found]

    def add_nodes(self, fns: Iterable[Callable[..., Any]]) -> list[NodeType]:
        return [self.add_node(fn) for fn in fns]

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
