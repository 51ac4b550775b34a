import os
import tempfile
from pathlib import Path

import pytest

from nodegraph import Registry
from nodegraph.plugins import load_registry

from . import engine_nodes

# `nodegraph run` keeps a disk cache by default (~/.cache/nodegraph). Tests must neither share results
# through the user's folder nor through each other: those that want one pass --disk-cache DIR.
os.environ["NODEGRAPH_DISK_CACHE"] = "off"
# `nodegraph submit` keeps job keys in the user's state folder; tests keep them in a folder of their own.
os.environ["NODEGRAPH_KEYS_FILE"] = str(Path(tempfile.mkdtemp(prefix="nodegraph-keys-")) / "job-keys.json")


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


# Tiny random diffusers pipelines, built once per session; tests must copy a folder before changing it.
# tiny_diffusers is imported inside each fixture so that sessions not using them never import diffusers.


@pytest.fixture(scope="session")
def sd15_folder(tmp_path_factory) -> Path:
    from .tiny_diffusers import build_sd15

    return build_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory) -> Path:
    from .tiny_diffusers import build_sdxl

    return build_sdxl(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="session")
def sd3_folder(tmp_path_factory) -> Path:
    from .tiny_diffusers import build_sd3

    return build_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="session")
def flux_folder(tmp_path_factory) -> Path:
    from .tiny_diffusers import build_flux

    return build_flux(tmp_path_factory.mktemp("flux"))
