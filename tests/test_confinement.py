"""Every path a node touches is declared and confined at validation, before anything runs (issue 15,
item 1; "Why" 1 and 3). Each attack below must end in a `path_refused` problem naming the node and
the input, with no node started and nothing read."""

import os
from pathlib import Path

import pytest

import nodegraph.confine
import nodegraph.fingerprint
from nodegraph import (
    ANY,
    STRING,
    Context,
    InputPath,
    OutputPath,
    PathPolicy,
    Registry,
    Session,
    Workflow,
    WorkflowInvalid,
    node,
    validate,
)
from nodegraph.session import NodeFailed

from .helpers import wf

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "nodes" / "weights"


def refused(err: WorkflowInvalid, node_id: str, name: str) -> str:
    """The message of the path_refused problem for (node, input); fails if there is none. (A save_image
    prefix is refused as a bad_value first: its pattern allows no '/' at all.)"""
    kinds = ("path_refused", "bad_value") if name == "prefix" else ("path_refused",)
    found = [p for p in err.problems if p.kind in kinds and p.node == node_id and p.input == name]
    assert found, f"no path_refused problem for {node_id}.{name}: {err.problems}"
    return found[0].message


def run_refused(session: Session, workflow: Workflow, node_id: str, name: str) -> str:
    events = []
    with pytest.raises(WorkflowInvalid) as info:
        session.run(workflow, on_event=events.append)
    assert events == [], "validation must refuse before any event (no run_start, no node_start)"
    message = refused(info.value, node_id, name)
    assert f"node {node_id!r}, input {name!r}" in str(info.value)
    return message


def save_backbone_workflow(filename: str) -> Workflow:
    return wf({"model": {"type": "core/bundled_backbone", "inputs": {"name": "shapes_t2i"}},
               "save": {"type": "core/save_backbone",
                        "inputs": {"backbone": {"from": "model", "output": "backbone"}, "filename": filename}}})


@pytest.mark.parametrize("filename", ["../nodes/weights/shapes_t2i.safetensors", "../../x.safetensors",
                                      "/tmp/evil.safetensors", "sub/../../evil.safetensors"])
def test_the_bundled_model_overwrite_attack_is_refused_at_validation(builtin_registry, tmp_path, monkeypatch,
                                                                      filename):
    monkeypatch.chdir(ROOT)
    out = ROOT / "outputs-confinement-test"  # ../nodes/weights/... from here is the real bundled model
    before = (WEIGHTS / "shapes_t2i.safetensors").read_bytes()
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out")
    session.paths = PathPolicy.build(out, registry=builtin_registry)  # output folder beside nodes/
    message = run_refused(session, save_backbone_workflow(filename), "save", "filename")
    assert "output folder" in message
    assert (WEIGHTS / "shapes_t2i.safetensors").read_bytes() == before
    assert not out.exists() and not Path("/tmp/evil.safetensors").exists()


def test_save_classifier_and_save_vae_filenames_are_confined(builtin_registry, tmp_path):
    w = wf({"c": {"type": "core/bundled_classifier", "inputs": {}},
            "save": {"type": "core/save_classifier",
                     "inputs": {"classifier": {"from": "c", "output": "classifier"}, "filename": "/etc/x.safetensors"}},
            "v": {"type": "core/vae_loader", "inputs": {}},
            "save_vae": {"type": "core/save_vae", "inputs": {"vae": {"from": "v", "output": "vae"},
                                                             "filename": "../vae.safetensors"}}})
    with pytest.raises(WorkflowInvalid) as info:
        Session(builtin_registry, device="cpu", output_dir=tmp_path).compile(w)
    assert "absolute" in refused(info.value, "save", "filename")
    refused(info.value, "save_vae", "filename")


@pytest.mark.parametrize("trainer", ["core/train_flow_matching", "core/train_text_to_image"])
def test_a_checkpoint_prefix_leaving_the_output_folder_is_refused(builtin_registry, tmp_path, trainer):
    w = wf({"train": {"type": trainer, "inputs": {"checkpoint_prefix": "../x", "checkpoint_every": 1}}})
    problems = validate(w, builtin_registry, PathPolicy.build(tmp_path))
    assert [p for p in problems if p.kind == "path_refused" and p.input == "checkpoint_prefix"], problems


@pytest.mark.parametrize(("name", "value"), [("prefix", "../up"), ("folder", "/etc"), ("folder", "../up"),
                                             ("folder", "a/../../up")])
def test_save_image_folder_and_prefix_are_refused_before_earlier_nodes_run(builtin_registry, tmp_path, name, value):
    workflow = Workflow.load(ROOT / "workflows" / "demo_clouds.json").set(f"save.{name}", value)
    run_refused(Session(builtin_registry, device="cpu", output_dir=tmp_path), workflow, "save", name)
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "up").exists()


def test_a_symlink_leading_out_of_the_output_folder_is_refused(builtin_registry, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)
    session = Session(builtin_registry, device="cpu", output_dir=out)
    message = run_refused(session, save_backbone_workflow("link/model.safetensors"), "save", "filename")
    assert "outside the output folder" in message
    workflow = Workflow.load(ROOT / "workflows" / "demo_clouds.json").set("save.folder", "link")
    run_refused(session, workflow, "save", "folder")
    assert list(elsewhere.iterdir()) == []


@pytest.fixture()
def no_reading(monkeypatch):
    """Fail the test if anything measures or hashes a path."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"read or walked {args[:1]} before the confinement check")
    monkeypatch.setattr(nodegraph.fingerprint, "_file_digest", forbidden)
    monkeypatch.setattr(nodegraph.confine, "walk_files", forbidden)
    monkeypatch.setattr(nodegraph.fingerprint, "walk_files", forbidden)


def test_text_encoder_model_root_is_refused_without_reading_anything(builtin_registry, tmp_path, no_reading):
    w = wf({"enc": {"type": "core/text_encoder_loader", "inputs": {"model": "/root"}}})
    message = run_refused(Session(builtin_registry, device="cpu", output_dir=tmp_path), w, "enc", "model")
    assert "outside the folders nodes may read" in message


def test_a_huge_folder_outside_the_roots_is_refused_fast_and_unread(builtin_registry, tmp_path, no_reading):
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "model.safetensors", "wb") as handle:  # 64 GiB, sparse: reading it would take minutes
        handle.truncate(64 << 30)
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out", read_roots=[tmp_path / "ok"])
    for type_id, name in [("core/text_encoder_loader", "model"), ("core/load_backbone", "file"),
                          ("core/image_folder_dataset", "folder")]:
        value = str(big / "model.safetensors") if name == "file" else str(big)
        run_refused(session, wf({"n": {"type": type_id, "inputs": {name: value}}}), "n", name)


def test_a_symlink_inside_a_read_root_leading_out_is_refused(builtin_registry, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "secret").symlink_to("/etc")
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out", read_roots=[allowed])
    w = wf({"n": {"type": "core/image_folder_dataset", "inputs": {"folder": str(allowed / "secret")}}})
    run_refused(session, w, "n", "folder")


def test_fingerprint_bounds_refuse_at_validation_without_hashing(registry, tmp_path, monkeypatch):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(6):
        (many / f"f{i}").write_text("x")
    with open(tmp_path / "sparse.bin", "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, sparse
    hashed = []
    monkeypatch.setattr(nodegraph.fingerprint, "_file_digest", lambda *a: hashed.append(a) or b"")
    session = Session(registry, output_dir=tmp_path / "out", read_roots=[tmp_path])
    session.paths = PathPolicy.build(tmp_path / "out", [tmp_path], max_files=5, max_bytes=1 << 30)
    message = run_refused(session, wf({"r": {"type": "test/read_file", "inputs": {"path": str(many)}}}), "r", "path")
    assert "more than 5 files" in message
    w = wf({"r": {"type": "test/read_file", "inputs": {"path": str(tmp_path / "sparse.bin")}}})
    message = run_refused(session, w, "r", "path")
    assert "bytes" in message
    assert hashed == []


calls: list[str] = []


@node("probe/text", category="test")
def probe_text(value: str = "x") -> STRING:
    return value


@node("probe/write", category="test", side_effect=True, outputs=("value",))
def probe_write(ctx: Context, target: OutputPath = "file.txt") -> ANY:
    calls.append(target)
    return str(ctx.output_path(target))


@node("probe/read", category="test")
def probe_read(source: InputPath) -> STRING:
    calls.append(source)
    return source


@pytest.fixture()
def probes() -> Registry:
    calls.clear()
    registry = Registry()
    for fn in (probe_text, probe_write, probe_read):
        registry.registrar("probe").add_node(fn)
    return registry


@pytest.mark.parametrize(("kind", "name", "value"), [("probe/write", "target", "../escape"),
                                                     ("probe/read", "source", "/etc/passwd")])
def test_a_linked_path_value_is_checked_when_it_arrives_before_its_node_runs(probes, tmp_path, kind, name, value):
    w = wf({"text": {"type": "probe/text", "inputs": {"value": value}},
            "use": {"type": kind, "inputs": {name: {"from": "text", "output": "string"}}}})
    events = []
    with pytest.raises(NodeFailed, match=f"input '{name}' from text.string: .*{value}"):
        Session(probes, output_dir=tmp_path / "out", read_roots=[tmp_path]).run(w, outputs=["use"],
                                                                               on_event=events.append)
    assert calls == [] and ("node_start", "use") not in [(e.kind, e.node) for e in events]


def test_an_allowed_write_lands_in_the_output_folder(probes, tmp_path):
    w = wf({"use": {"type": "probe/write", "inputs": {"target": "sub/file.txt"}}})
    result = Session(probes, output_dir=tmp_path / "out").run(w)
    assert result.value("use") == str((tmp_path / "out" / "sub" / "file.txt").resolve())


def test_context_output_path_checks_again_at_write_time(tmp_path):
    ctx = Context("n", "t", output_dir=str(tmp_path))
    assert ctx.output_path("a/b.txt") == (tmp_path / "a" / "b.txt").resolve()
    for bad in ("../x", "/etc/passwd", "", "a/../../x"):
        with pytest.raises(ValueError):
            ctx.output_path(bad)


def test_bundled_names_and_the_shipped_weights_resolve_from_any_working_folder(builtin_registry, tmp_path,
                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    w = wf({"enc": {"type": "core/text_encoder_loader", "inputs": {"model": "all-MiniLM-L6-v2"}},
            "vae": {"type": "core/vae_loader", "inputs": {"weights": "shapes"}},
            "load": {"type": "core/load_backbone", "inputs": {"file": str(WEIGHTS / "shapes_t2i.safetensors")}}})
    assert validate(w, builtin_registry, PathPolicy.build(tmp_path / "out", registry=builtin_registry)) == []


def test_read_roots_from_the_environment(registry, tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.txt").write_text("weights")
    w = wf({"r": {"type": "test/read_file", "inputs": {"path": str(tmp_path / "models" / "m.txt")}}})
    policy = PathPolicy.build(tmp_path / "out", [tmp_path / "cwd"])
    assert [p.kind for p in validate(w, registry, policy)] == ["path_refused"]
    monkeypatch.setenv("NODEGRAPH_READ_ROOTS", os.pathsep.join(["/nonexistent", str(tmp_path / "models")]))
    assert validate(w, registry, PathPolicy.build(tmp_path / "out", [tmp_path / "cwd"])) == []
