"""pluggy hook specifications. Built-in nodes and third-party plugins implement the same hooks."""

from __future__ import annotations

import pluggy

PROJECT = "nodegraph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class NodegraphSpec:
    @hookspec
    def nodegraph_register_types(self, registry):
        """Register socket types with `registry.add_type(SocketType(...))`. Runs before nodes."""

    @hookspec
    def nodegraph_register_nodes(self, registry):
        """Register node types with `registry.add_node(fn)` or `registry.add_module(module)`."""
