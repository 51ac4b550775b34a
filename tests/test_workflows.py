"""Every shipped workflow validates against the built-in nodes (a renamed input cannot rot them)."""

from pathlib import Path

import pytest

from nodegraph import Workflow

from .helpers import shipped_problems

WORKFLOWS = sorted((Path(__file__).resolve().parent.parent / "workflows").glob("*.json"))


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_shipped_workflow_is_valid(path, builtin_registry):
    assert [str(p) for p in shipped_problems(Workflow.load(path), builtin_registry)] == []


def test_default_workflow_exists():
    assert any(p.name == "default.json" for p in WORKFLOWS)
