"""docs/plugins.md is executed, so the tutorial cannot rot.

Fenced blocks whose info string is
    python test      run, in order, in one namespace, in a fresh working folder;
    python file=P    written to P (relative to that folder) instead; test_*.py files are then run;
    json file=P      written to P;
    toml test        parsed, and its entry point group checked.
Other blocks (bash, text, plain python) are prose.
"""

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    return [(lang, info.strip(), body) for lang, info, body in FENCE.findall(DOC.read_text())]


def test_the_doc_has_executable_blocks_of_each_kind():
    kinds = {(lang, info.split("=")[0]) for lang, info, _ in blocks()}
    assert {("python", "test"), ("python", "file"), ("json", "file"), ("toml", "test")} <= kinds
    assert sum(1 for lang, info, _ in blocks() if (lang, info) == ("python", "test")) >= 8


def test_run_the_tutorial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NODEGRAPH_PLUGINS", raising=False)
    namespace: dict = {"__name__": "docs_plugins"}
    written: list[Path] = []
    for index, (lang, info, body) in enumerate(blocks()):
        if info.startswith("file="):
            target = tmp_path / info.split("=", 1)[1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            written.append(target)
        elif (lang, info) == ("python", "test"):
            try:
                exec(compile(body, f"{DOC.name} block {index}", "exec"), namespace)
            except Exception as err:
                pytest.fail(f"docs/plugins.md python block {index} failed: {type(err).__name__}: {err}\n{body}")
        elif (lang, info) == ("toml", "test"):
            project = tomllib.loads(body)
            assert "nodegraph.plugins" in project["project"]["entry-points"]
    tests = [p for p in written if p.name.startswith("test_") and p.suffix == ".py"]
    assert tests
    for path in tests:
        monkeypatch.syspath_prepend(str(path.parent))
        module: dict = {"__name__": path.stem}
        exec(compile(path.read_text(), str(path), "exec"), module)
        for name, fn in module.items():
            if name.startswith("test_") and callable(fn):
                fn()
    for name in [m for m in sys.modules if m == "my_nodes"]:
        monkeypatch.delitem(sys.modules, name)
