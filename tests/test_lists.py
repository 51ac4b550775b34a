"""Lists and sweeps inside a graph: mapping, zip / product, per-element keys, batched solves, sweeps."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections import Counter
from pathlib import Path
from typing import Annotated

import pytest
import torch
from PIL import Image

from nodegraph import ANY, BatchAxis, NodeFailed, Session, Workflow, node, validate
from nodegraph.cli import main as cli_main
from nodegraph.plugins import load_registry

from . import engine_nodes
from .helpers import EventLog, link, wf

ROOT = Path(__file__).resolve().parent.parent
CALLS: Counter = Counter()


@node("test/join", category="test")
def join(a: float, b: str) -> str:
    """f"{a:g}{b}": shows which elements met."""
    CALLS["test/join"] += 1
    return f"{a:g}{b}"


@node("test/total", category="test")
def total(values: list[float]) -> float:
    """Sum of a list widget (an input that takes a whole list)."""
    CALLS["test/total"] += 1
    return sum(values)


@node("test/rows", category="test", outputs=("rows",))
def rows(x: Annotated[ANY, BatchAxis(0)], shift: ANY = None) -> Annotated[ANY, BatchAxis(0)]:
    """x + 10 * (row index within the call) + shift: a node whose batch may couple rows, so a test sees
    whether elements were batched (the count of calls) and split back in order."""
    CALLS["test/rows"] += 1
    offset = 0.0 if shift is None else float(getattr(shift, "value", shift))
    return x + offset


class Coupled:
    """A shared input that forbids batching (like an adaptive solver)."""

    samples_independent = False
    value = 0.0


@node("test/coupled", category="test", outputs=("value",))
def coupled() -> ANY:
    return Coupled()


@node("test/row_tensor", category="test", outputs=("tensor",))
def row_tensor(value: float, rows: int = 2) -> ANY:
    """A (rows, 3) tensor filled with `value`."""
    return torch.full((rows, 3), value)


@pytest.fixture(scope="module")
def registry():
    reg, report = load_registry(entry_points=False)
    assert not report.failures
    reg.registrar("tests").add_module(engine_nodes)
    reg.registrar("tests").add_nodes([join, total, rows, coupled, row_tensor])
    from nodes.solvers import Solver, euler  # an adaptive or stochastic solver would say the same

    reg.registrar("tests").add_component("solver", "coupled_euler", Solver("coupled_euler", euler,
                                                                           samples_independent=False))
    return reg


@pytest.fixture(autouse=True)
def _counts():
    CALLS.clear()
    engine_nodes.CALLS.clear()


def values(items: list) -> dict:
    return {"type": "core/values", "inputs": {"values": items}}


def joined(a: list, b: list, mode: str | None = None, reverse_inputs: bool = False) -> Workflow:
    inputs = {"a": link("as", "values"), "b": link("bs", "values")}
    if reverse_inputs:
        inputs = dict(reversed(list(inputs.items())))
    spec = {"type": "test/join", "inputs": inputs, **({"list_mode": mode} if mode else {})}
    return wf({"as": values(a), "bs": values(b), "j": spec,
               "out": {"type": "test/sink", "inputs": {"value": link("j", "string")}}})


# -- semantics ------------------------------------------------------------------------------------

def test_zip_pairs_elements_in_order(registry):
    result = Session(registry).run(joined([1, 2, 3], ["a", "b", "c"]))
    assert result.value("out") == ["1a", "2b", "3c"]  # the sink ran per element too
    assert result.elements["j"].ran == [0, 1, 2] and CALLS["test/join"] == 3


def test_product_takes_every_combination_first_declared_input_outermost(registry):
    for reverse in (False, True):  # the order inputs are written in the file does not matter
        result = Session(registry).run(joined([1, 2], ["a", "b", "c"], "product", reverse))
        assert result.value("out") == ["1a", "1b", "1c", "2a", "2b", "2c"]


def test_zip_of_unequal_lengths_is_an_error_naming_inputs_and_lengths(registry):
    with pytest.raises(NodeFailed) as err:
        Session(registry).run(joined([1, 2], ["a", "b", "c"]))
    message = str(err.value)
    assert err.value.node_id == "j" and "'a' has 2" in message and "'b' has 3" in message and "product" in message


def test_list_mode_is_validated_and_saved(registry):
    bad = joined([1], ["a"], "cartesian")
    problems = validate(bad, registry)
    assert [(p.node, p.kind) for p in problems] == [("j", "bad_value")] and "zip" in problems[0].message
    good = joined([1], ["a"], "product")
    assert Workflow.from_json(good.to_json()).nodes["j"].list_mode == "product"
    assert "list_mode" not in json.loads(joined([1], ["a"]).to_json())["nodes"]["j"]


def test_list_links_are_type_checked_and_nesting_refused(registry):
    workflow = wf({
        "seeds": {"type": "core/seeds", "inputs": {"count": 2}},
        "label": {"type": "test/join", "inputs": {"a": 1.0, "b": link("seeds", "seeds")}},  # INT list -> STRING
        "lazy": {"type": "test/choose", "inputs": {"condition": True, "yes": link("seeds", "seeds"), "no": 0}},
        "more": {"type": "core/seeds", "inputs": {"seed": link("seeds", "seeds")}},  # a list of lists
    })
    found = {(p.node, p.input, p.kind): p.message for p in validate(workflow, registry)}
    assert "is a list of INT, but this input takes STRING" in found[("label", "b", "type_mismatch")]
    assert ("lazy", "yes", "bad_list") in found and ("more", None, "bad_list") in found


def test_a_list_input_takes_a_list_whole_and_a_literal_list_is_never_mapped(registry):
    session = Session(registry)
    linked = wf({"v": values([1, 2, 4]), "t": {"type": "test/total", "inputs": {"values": link("v", "values")}}})
    result = session.run(linked)
    assert result.value("t") == 7.0 and CALLS["test/total"] == 1 and result.elements == {}
    literal = wf({"t": {"type": "test/total", "inputs": {"values": [1, 2, 4]}}})
    assert session.run(literal).value("t") == 7.0
    # a sweep is never taken whole: the list input runs once per swept value
    swept = wf({"s": {"type": "core/sweep", "inputs": {"values": [[1, 2], [3]]}},
                "t": {"type": "test/total", "inputs": {"values": link("s", "values")}}})
    assert session.run(swept).value("t") == [3.0, 3.0]


# -- caching ----------------------------------------------------------------------------------------

def chain(items: list) -> Workflow:
    return wf({
        "v": values(items),
        "plus": {"type": "test/add", "inputs": {"a": link("v", "values"), "b": 1.0}},
        "twice": {"type": "test/add", "inputs": {"a": link("plus", "float"), "b": link("plus", "float")}},
        "total": {"type": "test/total", "inputs": {"values": link("twice", "float")}},
    })


def test_changing_one_element_reruns_only_that_elements_branch(registry):
    session = Session(registry)
    first = session.run(chain([1, 2, 3]))
    assert first.value("total") == 4 + 6 + 8 and engine_nodes.CALLS["test/add"] == 6
    engine_nodes.CALLS.clear()
    log = EventLog()
    second = session.run(chain([1, 5, 3]), on_event=log)
    assert second.value("total") == 4 + 12 + 8
    assert second.elements["plus"].ran == [1] and second.elements["plus"].cached == [0, 2]
    assert second.elements["twice"].ran == [1] and engine_nodes.CALLS["test/add"] == 2
    done = {e.node: e.info for e in log if e.kind == "node_done"}
    assert done["plus"] == {"elements": 3, "ran": 1, "cached": 2}
    # keys are content keys, free of the index: reordering runs nothing per element
    engine_nodes.CALLS.clear()
    third = session.run(chain([3, 1, 5]))
    assert engine_nodes.CALLS["test/add"] == 0 and set(third.cached) >= {"plus", "twice"}
    assert third.value("total") == 24


def test_list_elements_are_kept_in_the_disk_cache_for_a_new_session(registry, tmp_path):
    """Each element has its own disk entry: a new Session (a new process) loads the elements it has seen
    and runs only the new one."""
    Session(registry, disk_cache=tmp_path).run(chain([1, 2, 3]))
    engine_nodes.CALLS.clear()
    second = Session(registry, disk_cache=tmp_path).run(chain([1, 2, 7]))
    assert second.value("total") == 4 + 6 + 16
    assert second.elements["plus"].ran == [2] and second.elements["plus"].cached == [0, 1]
    assert engine_nodes.CALLS["test/add"] == 2  # plus and twice of the new element only


def test_equal_elements_run_once(registry):
    result = Session(registry).run(chain([2, 2, 2]))
    assert result.elements["plus"].ran == [0] and result.elements["plus"].cached == [1, 2]
    assert result.value("total") == 18.0


def test_prompts_from_a_file_rerun_only_the_changed_line(registry, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\n  a blue square \na green star\n")
    session = Session(registry, read_roots=[tmp_path])
    workflow = wf({"p": {"type": "core/prompt_file", "inputs": {"path": str(prompts)}},
                   "j": {"type": "test/join", "inputs": {"a": 1.0, "b": link("p", "prompts")}}})
    assert session.run(workflow).value("j") == ["1a red circle", "1a blue square", "1a green star"]
    prompts.write_text("a red circle\na blue triangle\na green star\n")
    result = session.run(workflow)
    assert result.value("j")[1] == "1a blue triangle" and result.elements["j"].ran == [1]
    lines = wf({"p": {"type": "core/prompt_lines", "inputs": {"text": "x\ny"}},
                "r": {"type": "core/range", "inputs": {"start": 1, "stop": 3}},
                "j": {"type": "test/join", "inputs": {"a": link("r", "values"), "b": link("p", "prompts")},
                      "list_mode": "product"}})
    assert session.run(lines).value("j") == ["1x", "1y", "2x", "2y"]


# -- batching ------------------------------------------------------------------------------------

def batched_workflow(sizes: list[int], shift: dict | None = None) -> Workflow:
    nodes = {
        "v": values([float(i) for i in range(len(sizes))]),
        "r": values(sizes),
        "t": {"type": "test/row_tensor", "inputs": {"value": link("v", "values"), "rows": link("r", "values")}},
        "rows": {"type": "test/rows", "inputs": {"x": link("t", "tensor")}},
    }
    if shift:
        nodes["shift"] = shift
        nodes["rows"]["inputs"]["shift"] = link("shift", "value")
    return wf(nodes)


def test_elements_differing_only_in_a_batch_axis_input_run_as_one_call(registry):
    result = Session(registry).run(batched_workflow([2, 2, 2]))
    pieces = result.value("rows")
    assert CALLS["test/rows"] == 1 and result.elements["rows"].ran == [0, 1, 2]
    assert [p.tolist() for p in pieces] == [[[float(i)] * 3] * 2 for i in range(3)]


def test_batching_keeps_apart_what_cannot_share_a_call(registry):
    Session(registry).run(batched_workflow([2, 3, 2]))  # shapes differ: (2,3) twice, (3,3) once
    assert CALLS["test/rows"] == 2
    CALLS.clear()
    Session(registry).run(batched_workflow([2, 2, 2], {"type": "test/coupled", "inputs": {}}))
    assert CALLS["test/rows"] == 3  # a shared input with samples_independent = False


@pytest.fixture(scope="module")
def digits_session(registry):
    return Session(registry, device="cpu")


def digits_workflow(seed: dict | int, steps: int = 3, method: str = "heun") -> dict:
    listed = isinstance(seed, dict)
    cfg = {"field": link("field", "vector_field"), "cond": link("digits", "conditioning"),
           "null": link("null", "conditioning"), "scale": 4.0}
    solve = {"field": link("cfg", "vector_field"), "noise": link("noise", "latent"), "grid": link("grid", "time_grid"),
             "method": method}
    return {"format": "nodegraph/workflow", "version": 1, "name": "digits", "nodes": {
        "model": {"type": "core/bundled_backbone", "inputs": {"name": "digits_cfg_unet"}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "field": {"type": "core/model_field", "inputs": {"backbone": link("model", "backbone"),
                                                         "path": link("path", "path")}},
        "digits": {"type": "core/class_labels", "inputs": {"labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}},
        "null": {"type": "core/class_condition", "inputs": {"label": 10}},
        "seeds": seed if listed else {"type": "core/seed", "inputs": {"seed": seed}},
        "noise": {"type": "core/noise", "inputs": {"shape": [10, 1, 16, 16],
                                                   "seed": link("seeds", "seeds" if listed else "int")}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": steps}},
        "cfg": {"type": "core/cfg", "inputs": cfg},
        "solve": {"type": "core/ode_solve", "inputs": solve},
    }}


def forward_passes(session: Session) -> list[int]:
    """Batch sizes of every forward pass of the shipped digits U-Net from now on."""
    backbone = session.run(Workflow.from_dict(digits_workflow(0)), outputs=["model"]).value("model.backbone")
    seen: list[int] = []
    backbone.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    return seen


def test_seeds_run_as_one_batch_through_cfg_and_solver_and_equal_separate_runs(digits_session):
    session, steps, seeds = digits_session, 3, [4, 5, 6]
    passes = forward_passes(session)
    separate = [session.run(Workflow.from_dict(digits_workflow(s, steps)), outputs=["solve"]).value("solve.latent")
                for s in seeds]
    assert len(passes) == len(seeds) * steps * 2  # heun: two evaluations per step, cond + null in each
    passes.clear()
    listed = digits_workflow({"type": "core/seeds", "inputs": {"seed": seeds[0], "count": len(seeds)}}, steps)
    result = session.run(Workflow.from_dict(listed), outputs=["solve"])
    assert passes == [2 * 10 * len(seeds)] * (steps * 2)  # one pass per evaluation for all seeds
    assert result.value("solve.nfe") == [steps * 2] * len(seeds)
    for batched, alone in zip(result.value("solve.latent"), separate, strict=True):
        assert torch.allclose(batched, alone, atol=1e-5, rtol=0)
    # one more seed: only that element is solved (a batch of one)
    passes.clear()
    grown = digits_workflow({"type": "core/seeds", "inputs": {"seed": seeds[0], "count": len(seeds) + 1}}, steps)
    again = session.run(Workflow.from_dict(grown), outputs=["solve"])
    assert again.elements["solve"].ran == [3] and passes == [2 * 10] * (steps * 2)


def test_a_solver_that_couples_samples_solves_elements_apart(digits_session):
    session = digits_session
    passes = forward_passes(session)
    listed = digits_workflow({"type": "core/seeds", "inputs": {"seed": 40, "count": 2}}, 2, "coupled_euler")
    session.run(Workflow.from_dict(listed), outputs=["solve"])
    assert passes == [2 * 10] * 4  # 2 seeds x 2 steps, never the two seeds in one pass


# -- lists into image_grid, sweeps ------------------------------------------------------------------

def clouds(seed_node: dict, seed_output: str, **more: dict) -> Workflow:
    return wf({
        **more,
        "seed": seed_node,
        "noise": {"type": "core/random_tensor", "inputs": {"shape": [2, 3, 8, 8], "seed": link("seed", seed_output)}},
        "image": {"type": "core/to_image", "inputs": {"tensor": link("noise", "tensor"), "mode": "minmax"}},
        "grid": {"type": "core/image_grid", "inputs": {"images": link("image", "image"), "columns": 2, "padding": 0}},
    })


def test_image_grid_takes_a_list_of_image_batches(registry):
    session = Session(registry)
    result = session.run(clouds({"type": "core/seeds", "inputs": {"seed": 3, "count": 3}}, "seeds"))
    grid = result.value("grid")
    assert grid.shape == (1, 3, 3 * 8, 2 * 8)  # one row per seed
    for row, seed in enumerate((3, 4, 5)):
        alone = session.run(clouds({"type": "core/seed", "inputs": {"seed": seed}}, "int")).value("grid")
        assert torch.equal(grid[..., row * 8:(row + 1) * 8, :], alone)


def test_a_sweep_keeps_outputs_per_element_around_an_inner_list(registry):
    workflow = clouds({"type": "core/seeds", "inputs": {"seed": link("base", "values"), "count": 2}}, "seeds",
                      base={"type": "core/sweep", "inputs": {"values": [3, 10]}})
    result = Session(registry).run(workflow, outputs=["grid"])
    grids = result.value("grid")
    assert len(grids) == 2 and all(g.shape == (1, 3, 16, 16) for g in grids)  # per swept base: its 2 seeds
    inner = Session(registry).run(clouds({"type": "core/seeds", "inputs": {"seed": 10, "count": 2}}, "seeds"))
    assert torch.equal(grids[1], inner.value("grid"))


def test_cli_sweep_runs_once_and_gives_the_images_of_separate_runs(tmp_path, capsys):
    demo = str(ROOT / "workflows" / "demo_clouds.json")
    for seed in (1, 2):
        assert cli_main(["run", demo, "--out", str(tmp_path / "separate"), "--set", f"seed.seed={seed}",
                         "--events", "none"]) == 0
    capsys.readouterr()
    assert cli_main(["run", demo, "--out", str(tmp_path / "swept"), "--sweep", "seed.seed=1,2",
                     "--events", "none"]) == 0
    err = capsys.readouterr().err
    assert "sweep of 2: seed.seed=1; seed.seed=2" in err and "run 1:" in err and "run 2:" not in err
    separate = sorted((tmp_path / "separate").glob("*.png"))
    swept = sorted((tmp_path / "swept").glob("*.png"))
    assert [p.name for p in swept] == [p.name for p in separate] == ["clouds_00001.png", "clouds_00002.png"]
    # the same pixels (the files differ in the workflow each carries: the sweep, or one seed)
    assert [Image.open(p).tobytes() for p in swept] == [Image.open(p).tobytes() for p in separate]
    # a bad value is refused before anything runs
    assert cli_main(["run", demo, "--out", str(tmp_path / "bad"), "--sweep", "seed.seed=1,-3"]) == 2
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.png"))


def test_digits_cfg_sweep_is_one_cfg_and_one_solver_with_a_row_per_scale(digits_session, tmp_path):
    data = Workflow.load(ROOT / "workflows" / "digits_cfg_sweep.json").to_dict()
    types = Counter(spec["type"] for spec in data["nodes"].values())
    assert types["core/cfg"] == 1 and types["core/ode_solve"] == 1
    data["nodes"]["grid"]["inputs"]["steps"] = 2
    result = digits_session.run(Workflow.from_dict(data), outputs=["tiles"])
    tiles = result.value("tiles")
    assert tiles.shape == (1, 1, 3 * 17 + 1, 10 * 17 + 1) and result.elements["solve"].total == 3
    data["nodes"]["cfg"]["inputs"]["scale"] = 2.0  # the middle row, alone
    alone = digits_session.run(Workflow.from_dict(data), outputs=["image"]).value("image")
    assert torch.equal(tiles[0, :, 1 + 17:1 + 17 + 16, 1:17], alone[0])


# -- the editor -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(registry, tmp_path_factory):
    from fastapi.testclient import TestClient

    from ui.app import build_app, create_server

    blocks = build_app(Session(registry, device="cpu", output_dir=tmp_path_factory.mktemp("out")),
                       workflows_dir=tmp_path_factory.mktemp("workflows"))
    with TestClient(create_server(blocks), base_url="http://127.0.0.1:7860") as test_client:
        yield test_client


def test_editor_api_describes_and_validates_list_links(client):
    payload = client.get("/api/nodes").json()
    assert payload["nodes"]["core/seeds"]["outputs"]["seeds"] == {"type": "INT", "list": "list"}
    assert payload["nodes"]["core/sweep"]["outputs"]["values"]["list"] == "sweep"
    assert payload["nodes"]["core/image_grid"]["inputs"]["images"]["list_of"] == "IMAGE"
    assert payload["nodes"]["core/noise"]["inputs"]["shape"]["list_of"] == "INT"
    good = json.loads(joined([1, 2], ["a", "b"], "product").to_json())
    answer = client.post("/api/validate", json=good).json()
    assert answer["ok"] and answer["workflow"]["nodes"]["j"]["list_mode"] == "product"
    bad = json.loads(joined([1, 2], ["a", "b"], "diagonal").to_json())
    bad["nodes"]["seeds"] = {"type": "core/seeds", "inputs": {}}
    bad["nodes"]["j"]["inputs"]["b"] = link("seeds", "seeds")
    problems = {(p["node"], p["input"], p["kind"]) for p in client.post("/api/validate", json=bad).json()["problems"]}
    assert problems == {("j", None, "bad_value"), ("j", "b", "type_mismatch")}


@pytest.mark.skipif(shutil.which("node") is None, reason="node (JavaScript) is not installed")
def test_the_editors_list_rule_matches_validation(client, registry):
    """graph.js, run by node on the server's catalog, marks list links and refuses the links that
    validation refuses."""
    cases = {
        "map": ("core/seeds", "seeds", "core/noise", "seed"),         # INT list -> INT: runs per element
        "whole": ("core/values", "values", "core/noise", "shape"),    # list -> list[int] widget: taken whole
        "wrong": ("core/seeds", "seeds", "core/prompt_lines", "text"),  # INT list -> STRING: refused
        "sweep": ("core/sweep", "values", "core/noise", "shape"),     # a sweep into a list widget: per element
    }
    script = textwrap.dedent("""
        global.window = {};
        require(process.argv[1]);
        const NG = window.NG;
        const catalog = new NG.Catalog(JSON.parse(require("fs").readFileSync(0, "utf8")).payload);
        const cases = JSON.parse(process.argv[2]);
        const answers = {};
        for (const [name, [fromType, output, toType, input]] of Object.entries(cases)) {
          const graph = new NG.Graph(catalog);
          graph.load({nodes: {a: {type: fromType, inputs: {}}, b: {type: toType, inputs: {}}}});
          const refusal = graph.connect("a", output, "b", input);
          answers[name] = {refusal, levels: refusal ? null : graph.nodeLevels("b"),
                           list: graph.carriesList("a", output)};
        }
        console.log(JSON.stringify(answers));
    """)
    payload = client.get("/api/nodes").json()
    proc = subprocess.run(["node", "-e", script, str(ROOT / "ui" / "static" / "graph.js"), json.dumps(cases)],
                          input=json.dumps({"payload": payload}), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    answers = json.loads(proc.stdout)
    for name, (from_type, output, to_type, input_name) in cases.items():
        workflow = wf({"a": {"type": from_type, "inputs": {}}, "b": {"type": to_type, "inputs": {input_name:
                                                                                               link("a", output)}}})
        mismatch = [p for p in validate(workflow, registry) if p.kind == "type_mismatch"]
        assert bool(answers[name]["refusal"]) == bool(mismatch), (name, answers[name], mismatch)
        assert answers[name]["list"]
    assert answers["map"]["levels"] == ["list"] and answers["whole"]["levels"] == []
    assert answers["sweep"]["levels"] == ["sweep"] and "a list of INT" in answers["wrong"]["refusal"]
