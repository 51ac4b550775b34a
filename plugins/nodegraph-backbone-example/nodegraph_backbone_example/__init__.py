"""nodegraph-backbone-example: the `fourier_mlp` backbone architecture and its checkpoint loader.

Registered as an architecture component, fourier_mlp checkpoints are saved and loaded by the
built-in core/save_backbone and core/load_backbone nodes too.
"""

from nodegraph import hookimpl
from nodes.api import Architecture

from . import nodes
from .fourier_mlp import FourierMLP

__version__ = "0.2.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_components(registry):
    registry.add_component("architecture", FourierMLP.arch, Architecture(FourierMLP, "backbone"))


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
