"""The built-in node library, registered through the same pluggy hooks as any third-party plugin.

Every module of this package (and its sub-packages) is scanned for `@node` functions, so adding a
node is adding a function to a module here.
"""

import importlib
import pkgutil

from nodegraph import hookimpl

from . import sockets


@hookimpl
def nodegraph_register_types(registry):
    for socket in sockets.ALL:
        registry.add_type(socket)


@hookimpl
def nodegraph_register_nodes(registry):
    for info in sorted(pkgutil.walk_packages(__path__, prefix=f"{__name__}."), key=lambda i: i.name):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        registry.add_module(importlib.import_module(info.name))
