"""nodegraph-guidance-example: adaptive projected guidance (APG) as a guidance method of core/cfg."""

from nodegraph import hookimpl

from . import nodes
from .apg import APG

__version__ = "0.2.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_components(registry):
    registry.add_component("guidance", APG.name, APG)


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
