"""nodegraph-sampler-example: a SAMPLER socket type and DPM-Solver++(2M) / stochastic DDIM samplers.

nodegraph finds this module through the `nodegraph.plugins` entry point in pyproject.toml and calls
the two hooks below; everything else is ordinary Python.
"""

from nodegraph import hookimpl

from . import nodes
from .sockets import SAMPLER

__version__ = "0.1.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_types(registry):
    registry.add_type(SAMPLER)


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
