"""nodegraph-sampler-example: DPM-Solver++(2M) and stochastic DDIM as registered solvers.

nodegraph finds this module through the `nodegraph.plugins` entry point in pyproject.toml and calls
the hooks below: both solvers then appear in core/ode_solve's `method` list, and the ddim_eta node
sets that solver's options.
"""

from nodegraph import hookimpl
from nodes.api import Solver

from . import nodes
from .samplers import ddim_eta, dpmpp_2m

__version__ = "0.2.0"
NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_components(registry):
    registry.add_component("solver", "dpmpp_2m", Solver("dpmpp_2m", dpmpp_2m, needs_path=True))
    registry.add_component("solver", "ddim_eta", Solver("ddim_eta", ddim_eta, {"eta": 1.0, "seed": 0},
                                                        needs_path=True, samples_independent=False))


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
