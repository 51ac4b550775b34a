"""nodegraph-guidance-example: adaptive projected guidance (APG) as a node on the built-in fields."""

from nodegraph import hookimpl

from . import nodes

__version__ = "0.1.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
