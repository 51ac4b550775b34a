import pytest

from nodegraph import Registry
from nodegraph.plugins import load_registry

from . import engine_nodes


@pytest.fixture(scope="session")
def builtin_registry() -> Registry:
    """Built-in nodes only (no entry-point plugins), loaded once."""
    registry, report = load_registry(entry_points=False)
    assert not report.failures, report.failures
    return registry


@pytest.fixture()
def registry() -> Registry:
    """A fresh registry holding the engine test nodes under the 'test' namespace."""
    reg = Registry()
    reg.registrar("tests").add_module(engine_nodes)
    return reg
