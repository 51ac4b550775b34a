"""nodegraph-backbone-example: the `fourier_mlp` backbone architecture and its checkpoint loader."""

from nodegraph import hookimpl

from . import nodes
from .fourier_mlp import FourierMLP

__version__ = "0.1.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_nodes(registry):
    from nodes.models.checkpoint import register_architecture

    register_architecture(FourierMLP, "backbone")  # core/save_backbone and core/load_backbone now know it
    registry.add_module(nodes)
