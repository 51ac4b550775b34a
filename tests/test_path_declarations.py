"""The confinement walk: every node input named like a path is a declared InputPath/OutputPath.

A `str` input called `file`, `folder`, `checkpoint_prefix`... that is not declared would be passed
to the node unchecked, so a workflow could read or write anywhere. This test walks every built-in
node and the nodes of the three example plugins and fails on such an input.
"""

import re
from pathlib import Path

from nodegraph import STRING, load_registry

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "plugins").iterdir() if p.is_dir() and p.name.endswith("-example"))

PATH_LIKE = re.compile(r"(^|_)(path|paths|file|files|filename|folder|dir|directory|prefix|weights|checkpoint|"
                       r"model|root|location|dest|destination|output_dir|save_to)($|_)")

NOT_PATHS = {
    # (node id, input): why it is a str named like a path but names no file
    ("core/path", "kind"): "the probability-path kind (cond_ot, cosine...), a Literal choice",
    ("core/path_schedule", "path"): "a PATH socket (probability path object), not a str",
}


def example_registry(tmp_path: Path, monkeypatch):
    """Built-ins plus the three example plugins, each imported from its source folder (as installed)
    and handed to the loader through a one-line plugin file that re-exports its hooks."""
    shims = tmp_path / "shims"
    shims.mkdir()
    for folder in EXAMPLES:
        monkeypatch.syspath_prepend(str(folder))
        package = folder.name.replace("-", "_")
        (shims / f"{package}.py").write_text(
            f"import {package} as _m\n"
            "globals().update({k: v for k, v in vars(_m).items() if k.startswith('nodegraph_') "
            "or k in ('NODEGRAPH_API_VERSION', '__version__')})\n")
    registry, report = load_registry(plugin_dirs=[str(shims)], entry_points=False)
    assert not report.failures, report.failures
    return registry


def path_like_string_inputs(registry):
    for node_type in registry.nodes.values():
        for name, spec in node_type.inputs.items():
            if spec.socket is STRING and spec.access is None and PATH_LIKE.search(name):
                yield node_type.id, name


def test_the_walk_sees_the_built_ins_and_the_three_example_plugins(tmp_path, monkeypatch):
    registry = example_registry(tmp_path, monkeypatch)
    assert len(EXAMPLES) == 3
    plugins = {t.plugin for t in registry.nodes.values()}
    assert {folder.name.replace("-", "_") for folder in EXAMPLES} <= plugins, plugins
    declared = {(t.id, n) for t in registry.nodes.values() for n, s in t.inputs.items() if s.access is not None}
    assert {("core/save_backbone", "filename"), ("core/save_classifier", "filename"), ("core/save_vae", "filename"),
            ("core/save_image", "folder"), ("core/save_image", "prefix"), ("core/load_image", "path"),
            ("core/train_flow_matching", "checkpoint_prefix"), ("core/train_text_to_image", "checkpoint_prefix"),
            ("core/text_encoder_loader", "model"), ("core/vae_loader", "weights"), ("core/load_backbone", "file"),
            ("core/load_classifier", "file"), ("core/image_folder_dataset", "folder"),
            ("core/array_file_dataset", "file")} <= declared


def test_no_str_input_named_like_a_path_is_undeclared(tmp_path, monkeypatch):
    registry = example_registry(tmp_path, monkeypatch)
    undeclared = [item for item in path_like_string_inputs(registry) if item not in NOT_PATHS]
    assert undeclared == [], f"declare these as InputPath / OutputPath (or allow-list with a reason): {undeclared}"


def test_the_walk_catches_an_undeclared_path_input():
    from nodegraph import Registry, node

    @node("probe/leaky")
    def leaky(filename: str = "x.bin") -> None:
        """Writes wherever it is told: exactly what the walk must catch."""

    registry = Registry()
    registry.add_node(leaky)
    assert list(path_like_string_inputs(registry)) == [("probe/leaky", "filename")]
