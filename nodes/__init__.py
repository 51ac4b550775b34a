"""The built-in node library: a plugin like any other, found through nodegraph's own `nodegraph.plugins`
entry point and registered through the same pluggy hooks as a third party's.

Every module of this package (and its sub-packages) is scanned for `@node` functions, so adding a
node is adding a function to a module here. Plugins build on `nodes.api`, not on these modules.
"""

import importlib
import pkgutil

from nodegraph import CODEC_COMPONENT, SETTING_COMPONENT, hookimpl

from . import sockets
from .codecs import BUILTIN_CODECS
from .guidance import BUILTIN_GUIDANCE
from .paths import BUILTIN_PATHS
from .schedules import BUILTIN_SCHEDULE_PATHS
from .solvers import BUILTIN_SOLVERS

NODEGRAPH_API_VERSION = 1


@hookimpl
def nodegraph_register_types(registry):
    for socket in sockets.ALL:
        registry.add_type(socket)


@hookimpl
def nodegraph_register_components(registry):
    for solver in BUILTIN_SOLVERS:
        registry.add_component("solver", solver.name, solver)
    for path in BUILTIN_PATHS + BUILTIN_SCHEDULE_PATHS:
        registry.add_component("path", path.name, path)
    for method in BUILTIN_GUIDANCE:
        registry.add_component("guidance", method.name, method)
    for codec in BUILTIN_CODECS:  # what the disk cache may store: tensors and conditions
        registry.add_component(CODEC_COMPONENT, codec.name, codec)
    from .families.family import BUILTIN_FAMILIES
    from .models.architectures import BUILTIN_ARCHITECTURES

    for family in BUILTIN_FAMILIES:
        registry.add_component("family", family.name, family)

    for architecture in BUILTIN_ARCHITECTURES:
        registry.add_component("architecture", architecture.name, architecture)
    from .models.checkpoint import MAX_PARAMETERS_ENV, WEIGHTS_DIR, max_parameters

    # nodes may read the shipped weights wherever the package is installed (see nodegraph.confine)
    registry.add_component("read_root", "core_weights", WEIGHTS_DIR)
    # read at every model load; registered so that the CLI and the editor check it at start
    registry.add_component(SETTING_COMPONENT, MAX_PARAMETERS_ENV, max_parameters)


@hookimpl
def nodegraph_register_nodes(registry):
    for info in sorted(pkgutil.walk_packages(__path__, prefix=f"{__name__}."), key=lambda i: i.name):
        if info.name.rsplit(".", 1)[-1].startswith("_") or info.name == f"{__name__}.api":
            continue
        registry.add_module(importlib.import_module(info.name))
