"""Plugins build on `nodegraph` and `nodes.api` only: the example plugins and the scaffold's package.

Any other module of the library (nodes.fields, nodes.sockets, nodes.models.unet ...) is internal and may
change within an API version, so importing it from a plugin is a bug this test catches.
"""

import ast
from pathlib import Path

import pytest

from nodegraph.scaffold import new_plugin

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = {"nodegraph", "nodes"}
ALLOWED = {"nodes.api"}


def forbidden_imports(source: str, filename: str = "<plugin>") -> list[str]:
    """Each import of a library module other than nodegraph(.*) or nodes.api, as 'line: module'."""
    found = []
    for stmt in ast.walk(ast.parse(source, filename)):
        if isinstance(stmt, ast.Import):
            modules = [alias.name for alias in stmt.names]
        elif isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
            # `from nodes import api` names nodes.api; `from nodes import fields` names nodes.fields
            modules = [f"nodes.{a.name}" for a in stmt.names] if stmt.module == "nodes" else [stmt.module]
        else:
            continue
        for module in modules:
            top = module.split(".", 1)[0]
            if top in LIBRARY and top != "nodegraph" and module not in ALLOWED:
                found.append(f"{stmt.lineno}: {module}")
    return found


def plugin_sources(tmp_path: Path) -> list[Path]:
    scaffold = new_plugin("import-check", tmp_path)
    return sorted((ROOT / "plugins").rglob("*.py")) + sorted(scaffold.rglob("*.py"))


def test_plugins_and_scaffold_import_only_the_public_api(tmp_path):
    sources = plugin_sources(tmp_path)
    assert len([p for p in sources if p.is_relative_to(ROOT / "plugins")]) >= 9  # three example plugins
    bad = {str(p): found for p in sources if (found := forbidden_imports(p.read_text(), str(p)))}
    assert not bad, f"plugins must import only nodegraph and nodes.api: {bad}"


@pytest.mark.parametrize(("source", "bad"), [
    ("from nodes.fields import FieldWrapper\n", ["1: nodes.fields"]),
    ("import nodes.sockets\n", ["1: nodes.sockets"]),
    ("from nodes.models.unet import UNet\n", ["1: nodes.models.unet"]),
    ("from nodes import fields, api\n", ["1: nodes.fields"]),
    ("import nodes\n", ["1: nodes"]),
    ("from nodes.api import TENSOR\nfrom nodegraph.plugins import load_registry\nimport torch\n", []),
    ("from . import nodes\nfrom .nodes import lerp\n", []),
])
def test_the_check_catches_internal_imports(source, bad):
    assert forbidden_imports(source) == bad


def test_a_planted_internal_import_fails_the_scan(tmp_path):
    plugin = new_plugin("planted", tmp_path)
    module = plugin / "nodegraph_planted" / "nodes.py"
    module.write_text(module.read_text() + "from nodes.sockets import LATENT\n")
    assert [m for p in plugin.rglob("*.py") for m in forbidden_imports(p.read_text())] == [
        f"{len(module.read_text().splitlines())}: nodes.sockets"]
