"""`nodegraph plugin new NAME`: write a plugin package that installs and loads right away.

The package (folder `nodegraph-<name>`) holds a pyproject.toml with the `nodegraph.plugins` entry
point, a module with one node and the plugin hooks, a test and a README. The generated code imports
only `nodegraph` and `nodes.api`, the two modules a plugin may rely on. NAME gives everything else:
    namespace of the node ids  = NAME lower-cased with '-' -> '_'   (my-nodes -> my_nodes/...)
    import package             = nodegraph_<namespace>
    distribution               = nodegraph-<namespace with '_' -> '-'>
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text
from .plugins import API_VERSION, ENTRY_POINT_GROUP
from .registry import RESERVED_NAMESPACES

NAMESPACE = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(ValueError):
    """A plugin name that cannot become a namespace, or a target folder that already exists."""


@dataclass(frozen=True)
class PluginNames:
    namespace: str
    package: str
    distribution: str

    @classmethod
    def from_name(cls, name: str) -> PluginNames:
        namespace = name.strip().lower().replace("-", "_")
        if namespace.startswith("nodegraph_"):
            namespace = namespace[len("nodegraph_"):]
        if not NAMESPACE.match(namespace):
            raise ScaffoldError(f"plugin name {name!r} must be letters, digits, '-' or '_', starting with a letter")
        if namespace in RESERVED_NAMESPACES:
            raise ScaffoldError(f"plugin name {name!r}: namespace {namespace!r} is reserved for built-in nodes")
        return cls(namespace, f"nodegraph_{namespace}", f"nodegraph-{namespace.replace('_', '-')}")


PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "nodegraph plugin: {namespace} nodes."
requires-python = ">=3.11"
dependencies = ["nodegraph>=0.1"]

# nodegraph finds the plugin through this entry point; its name is the plugin's name and namespace.
[project.entry-points."{group}"]
{namespace} = "{package}"

[tool.setuptools]
packages = ["{package}"]
'''

INIT = '''"""{distribution}: nodegraph nodes in the `{namespace}/` namespace."""

from nodegraph import hookimpl

from . import nodes

__version__ = "0.1.0"
NODEGRAPH_API_VERSION = {api_version}


@hookimpl
def nodegraph_register_types(registry):
    """Add your own socket types here: registry.add_type(SocketType("MY_TYPE", ...))."""


@hookimpl
def nodegraph_register_components(registry):
    """Add solvers, paths, guidance methods or architectures here (see nodes.api), e.g.
    registry.add_component("solver", "my_solver", Solver("my_solver", my_solver))."""


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_module(nodes)
'''

NODES = '''"""The plugin's nodes. Every @node function of this module is registered by the hook in __init__.py."""

from typing import Annotated

from nodegraph import node
from nodes.api import TENSOR
from pydantic import Field


@node("{namespace}/lerp", category="{namespace}", display_name="Linear interpolation")
def lerp(a: TENSOR, b: TENSOR, weight: Annotated[float, Field(ge=0, le=1)] = 0.5) -> TENSOR:
    """(1 - weight) a + weight b, element-wise (weight 0 gives a, 1 gives b)."""
    return a + weight * (b - a)
'''

TEST = '''import importlib.metadata

import pytest
import torch

from nodegraph import Session, Workflow
from nodegraph.plugins import load_registry

from {package} import nodegraph_register_nodes, nodes


def test_lerp_is_plain_python():
    a, b = torch.zeros(3), torch.ones(3)
    assert torch.allclose(nodes.lerp(a, b, 0.25), torch.full((3,), 0.25))


def test_plugin_registers_its_nodes():
    registry, _ = load_registry(entry_points=False)
    nodegraph_register_nodes(registry=registry.registrar("{namespace}"))
    assert registry.get("{namespace}/lerp").plugin == "{namespace}"


def test_lerp_in_a_workflow(tmp_path):
    registry, _ = load_registry(entry_points=False)
    nodegraph_register_nodes(registry=registry.registrar("{namespace}"))
    workflow = Workflow.from_dict({{
        "format": "nodegraph/workflow", "version": 1, "name": "lerp",
        "nodes": {{
            "a": {{"type": "core/random_tensor", "inputs": {{"shape": [2, 3], "seed": 0}}}},
            "b": {{"type": "core/random_tensor", "inputs": {{"shape": [2, 3], "seed": 1}}}},
            "mix": {{"type": "{namespace}/lerp", "inputs": {{"a": {{"from": "a", "output": "tensor"}},
                                                    "b": {{"from": "b", "output": "tensor"}}, "weight": 1.0}}}},
        }},
    }})
    result = Session(registry, device="cpu", output_dir=tmp_path).run(workflow, outputs=["mix", "b"])
    assert torch.allclose(result.outputs["mix"]["tensor"], result.outputs["b"]["tensor"])


def test_installed_plugin_loads():
    names = {{ep.name for ep in importlib.metadata.entry_points(group="{group}")}}
    if "{namespace}" not in names:
        pytest.skip("plugin not installed yet: pip install -e .")
    _, report = load_registry()
    info = next(p for p in report.plugins if p.name == "{namespace}")
    assert info.error is None and "{namespace}/lerp" in info.node_ids
'''

README = '''# {distribution}

nodegraph plugin with nodes in the `{namespace}/` namespace.

    pip install -e .          # install into the environment that has nodegraph
    nodegraph plugins         # lists {namespace} with its nodes
    python -m pytest tests    # run the plugin's tests

Write nodes in `{package}/nodes.py` (see nodegraph's docs/plugins.md).
'''


def files_for(names: PluginNames) -> dict[str, str]:
    """Relative path -> text of every file of the new package."""
    values = {"namespace": names.namespace, "package": names.package, "distribution": names.distribution,
              "group": ENTRY_POINT_GROUP, "api_version": API_VERSION}
    return {
        "pyproject.toml": PYPROJECT.format(**values),
        "README.md": README.format(**values),
        f"{names.package}/__init__.py": INIT.format(**values),
        f"{names.package}/nodes.py": NODES.format(**values),
        f"tests/test_{names.namespace}.py": TEST.format(**values),
    }


def new_plugin(name: str, directory: str | Path = ".") -> Path:
    """Create `<directory>/<distribution>/` with the package; refuses to overwrite an existing folder."""
    names = PluginNames.from_name(name)
    root = Path(directory).expanduser() / names.distribution
    if root.exists():
        raise ScaffoldError(f"{root} already exists; choose another name or --dir")
    for relative, text in files_for(names).items():
        atomic_write_text(root / relative, text, overwrite=False)
    return root
