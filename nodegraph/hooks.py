"""pluggy hook specifications. Built-in nodes and third-party plugins implement the same hooks.

Hooks run in this order for every plugin: types, then components, then nodes. Each hook receives a
`PluginRegistrar`: the registry seen through the calling plugin's name, so whatever it adds is
recorded as that plugin's (and a plugin cannot register under another plugin's name).
"""

from __future__ import annotations

import pluggy

PROJECT = "nodegraph"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class NodegraphSpec:
    @hookspec
    def nodegraph_register_types(self, registry):
        """Register socket types with `registry.add_type(SocketType(...))`. Runs first."""

    @hookspec
    def nodegraph_register_components(self, registry):
        """Register named components with `registry.add_component(kind, name, value)`: solvers,
        probability paths, guidance methods, architectures, disk-cache codecs ("codec", see
        `nodegraph.codecs`), ... (the kinds are the library's).
        Inputs declared `Choice(kind)` list every registered name. Runs before nodes."""

    @hookspec
    def nodegraph_register_nodes(self, registry):
        """Register node types with `registry.add_node(fn)` or `registry.add_module(module)`."""
