"""The extension API: the engine without the library, components chosen by name, plugin solvers and
paths in the built-in nodes, types that check before running, and migrations that keep results."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nodegraph import NodeFailed, Session, Workflow, validate
from nodegraph.plugins import load_registry

from .helpers import shipped_problems

ROOT = Path(__file__).resolve().parent.parent


def link(source: str, output: str) -> dict:
    return {"from": source, "output": output}


def test_engine_imports_and_runs_without_the_library():
    code = textwrap.dedent("""
        import sys
        import nodegraph, nodegraph.cli
        from nodegraph import Registry, Session, Workflow, node

        imported = sorted({m.split(".")[0] for m in sys.modules} & {"nodes", "ui", "torch"})
        assert not imported, imported  # the engine alone: no library, no UI, no torch at import

        @node("solo/double")
        def double(x: int = 2) -> int:
            return 2 * x

        registry = Registry()
        registry.registrar("solo").add_node(double)
        wf = Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "solo",
                                 "nodes": {"d": {"type": "solo/double", "inputs": {"x": 21}}}})
        assert Session(registry).run(wf).value("d") == 42
        leaked = sorted({m.split(".")[0] for m in sys.modules} & {"nodes", "ui"})
        assert not leaked, leaked  # running needs no library either (torch only for the device)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_built_in_library_loads_through_its_entry_point():
    _, report = load_registry(entry_points=False)
    core = next(p for p in report.plugins if p.name == "core")
    assert core.ok and core.source == "entry point nodes"


# --- a plugin package installed with pip, as users install plugins ---------------------------------------------

PLUGIN = '''
"""A test plugin: a solver and a path, registered as components, plus a comparison node."""
import torch
from nodegraph import hookimpl, node
from nodes.api import TENSOR, GaussianPath, Solver

NODEGRAPH_API_VERSION = 1


class SquarePath(GaussianPath):
    """alpha_t = t^2, beta_t = 1 - t^2."""

    name = "square"

    def alpha(self, t):
        return t * t

    def beta(self, t):
        return 1 - t * t

    def d_alpha(self, t):
        return 2 * t

    def d_beta(self, t):
        return -2 * t


def forward_euler(field, x, times, cond=None, callback=None, trajectory=None):
    """x += h u(x, t), written independently of the built-in Euler."""
    for i in range(len(times) - 1):
        t = torch.full((x.shape[0],), float(times[i]), dtype=x.dtype, device=x.device)
        x = x + float(times[i + 1] - times[i]) * field(x, t, cond)
        if callback is not None:
            callback(i + 1, len(times) - 1)
    return x


@node("testplug/max_abs_diff", category="test")
def max_abs_diff(a: TENSOR, b: TENSOR) -> float:
    """max |a - b|."""
    return float((a - b).abs().max())


@hookimpl
def nodegraph_register_components(registry):
    registry.add_component("solver", "forward_euler", Solver("forward_euler", forward_euler))
    registry.add_component("path", "square", SquarePath())


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(max_abs_diff)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "nodegraph-testplug"
version = "1.0.0"

[project.entry-points."nodegraph.plugins"]
testplug = "nodegraph_testplug"

[tool.setuptools]
py-modules = ["nodegraph_testplug"]
'''


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("testplug_src")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "nodegraph_testplug.py").write_text(PLUGIN)
    target = tmp_path_factory.mktemp("testplug_site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("NODEGRAPH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "nodegraph.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_installed_plugin_solver_and_path_are_choices_and_run_in_the_built_in_nodes(plugin_site, tmp_path):
    proc = cli(plugin_site, "nodes", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes = {n["id"]: n for n in json.loads(proc.stdout)["nodes"]}
    assert "forward_euler" in nodes["core/ode_solve"]["inputs"]["method"]["schema"]["enum"]
    assert "forward_euler" in nodes["core/attention_maps"]["inputs"]["method"]["schema"]["enum"]
    assert "square" in nodes["core/path"]["inputs"]["kind"]["schema"]["enum"]

    def branch(prefix: str, path_node: dict, method: str) -> dict:
        return {
            f"{prefix}_path": path_node,
            f"{prefix}_field": {"type": "core/toy_field", "inputs": {"mixture": link("mixture", "mixture"),
                                                                    "path": link(f"{prefix}_path", "path")}},
            f"{prefix}_solve": {"type": "core/ode_solve", "inputs": {
                "field": link(f"{prefix}_field", "vector_field"), "noise": link("noise", "latent"),
                "grid": link("grid", "time_grid"), "method": method}},
        }

    nodes_json = {
        "mixture": {"type": "core/toy_mixture", "inputs": {"preset": "ring", "components": 4, "num_classes": 1}},
        "noise": {"type": "core/noise", "inputs": {"shape": [64, 2], "seed": 0}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": 12, "t_max": 0.95}},
        **branch("plugin", {"type": "core/path", "inputs": {"kind": "square"}}, "forward_euler"),
        **branch("builtin", {"type": "core/polynomial_path", "inputs": {"n": 2.0}}, "euler"),
        "diff": {"type": "testplug/max_abs_diff", "inputs": {"a": link("plugin_solve", "latent"),
                                                           "b": link("builtin_solve", "latent")}},
        "moved": {"type": "testplug/max_abs_diff", "inputs": {"a": link("plugin_solve", "latent"),
                                                            "b": link("noise", "latent")}},
    }
    wf = tmp_path / "plugin.json"
    wf.write_text(json.dumps({"format": "nodegraph/workflow", "version": 1, "name": "plugin", "nodes": nodes_json}))
    proc = cli(plugin_site, "run", str(wf), "--events", "none", "--device", "cpu", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    values = dict(line.split(" = ") for line in proc.stdout.splitlines() if " = " in line)
    assert float(values["diff.float"]) < 1e-5  # the plugin's Euler on its path = built-in Euler on t^2
    assert float(values["moved.float"]) > 0.5  # and the samples really moved away from the noise


# --- choices and types, checked before anything runs ----------------------------------------------------------

@pytest.fixture(scope="module")
def registry():
    return load_registry(entry_points=False)[0]


def _toy(extra: dict) -> Workflow:
    nodes = {
        "mixture": {"type": "core/toy_mixture", "inputs": {"preset": "ring", "components": 4, "num_classes": 1}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "field": {"type": "core/toy_field", "inputs": {"mixture": link("mixture", "mixture"),
                                                      "path": link("path", "path")}},
        "noise": {"type": "core/noise", "inputs": {"shape": [32, 2], "seed": 0}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": 4}},
        **extra,
    }
    return Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "toy", "nodes": nodes})


def _solve(method, version: int | None = None) -> dict:
    spec = {"type": "core/ode_solve", "inputs": {"field": link("field", "vector_field"),
                                                 "noise": link("noise", "latent"),
                                                 "grid": link("grid", "time_grid"), "method": method}}
    if version is not None:
        spec["version"] = version
    return {"solve": spec}


def test_an_unknown_choice_is_a_validation_problem_listing_the_registered_names(registry):
    problems = validate(_toy(_solve("eulr", version=2)), registry)
    assert [(p.kind, p.node, p.input) for p in problems] == [("bad_value", "solve", "method")]
    assert "unknown solver 'eulr'" in problems[0].message and "did you mean 'euler'" in problems[0].message
    assert "'dopri5'" in problems[0].message


def test_every_registered_solver_runs_by_name_and_a_linked_solver_sets_options(registry):
    session = Session(registry, device="cpu")
    results = {}
    for name in registry.component_names("solver"):
        results[name] = session.run(_toy(_solve(name))).value("solve.latent")
        assert results[name].shape == (32, 2) and bool(results[name].isfinite().all())
    torch.testing.assert_close(results["ddim"], results["euler"])  # DDIM = Euler on CondOT
    tight = session.run(_toy({**_solve(link("tight", "solver")),
                              "tight": {"type": "core/dopri5_solver", "inputs": {"rtol": 1e-7, "atol": 1e-7}}}))
    loose = session.run(_toy({**_solve(link("loose", "solver")),
                              "loose": {"type": "core/dopri5_solver", "inputs": {"rtol": 1e-2, "atol": 1e-2}}}))
    assert tight.value("solve.nfe") > loose.value("solve.nfe")


def test_ode_solve_shows_only_options_that_apply(registry):
    inputs = registry.nodes["core/ode_solve"].schema(registry)["inputs"]
    assert "rtol" not in inputs and "atol" not in inputs
    assert set(registry.nodes["core/dopri5_solver"].inputs) == {"rtol", "atol", "max_steps"}
    path_inputs = registry.nodes["core/path"].schema(registry)["inputs"]
    assert set(path_inputs) == {"kind"}
    assert path_inputs["kind"]["schema"]["enum"] == ["cond_ot", "cosine", "linear_vp", "vp", "polynomial", "ve", "ddpm",
                                                   "rectified_flow"]


def test_prompt_to_prompt_with_a_non_model_field_is_rejected_by_validation(registry):
    data = json.loads((ROOT / "workflows" / "p2p_word_swap.json").read_text())
    data["nodes"]["guided"] = {"type": "core/condition_field", "inputs": {
        "field": link("field", "vector_field"), "conditioning": link("null_prompt", "conditioning")}}
    data["nodes"]["null_prompt"] = {"type": "core/text_encode", "inputs": {
        "encoder": link("text_encoder", "text_encoder"), "text": ""}}
    data["nodes"]["edit"]["inputs"]["field"] = link("guided", "vector_field")
    problems = validate(Workflow.from_dict(data), registry)
    assert [(p.kind, p.node, p.input) for p in problems] == [("type_mismatch", "edit", "field")]
    assert "VECTOR_FIELD, but this input takes MODEL_FIELD" in problems[0].message


def _digits_field(path_node: dict | None) -> Workflow:
    nodes = {
        "model": {"type": "core/bundled_backbone", "inputs": {"name": "digits_cfg_unet"}},
        "field": {"type": "core/model_field", "inputs": {"backbone": link("model", "backbone")}},
    }
    if path_node is not None:
        nodes["path"] = path_node
        nodes["field"]["inputs"]["path"] = link("path", "path")
    return Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "f", "nodes": nodes})


def test_model_field_takes_the_path_recorded_in_the_checkpoint(registry):
    from nodes.paths import CondOTPath

    session = Session(registry, device="cpu")
    field = session.run(_digits_field(None)).value("field")
    assert field.path == CondOTPath()
    same = session.run(_digits_field({"type": "core/path", "inputs": {"kind": "cond_ot"}})).value("field")
    assert same.path == CondOTPath()
    with pytest.raises(NodeFailed, match=r"linked path CosinePath\(\) contradicts .* CondOTPath\(\)") as err:
        session.run(_digits_field({"type": "core/path", "inputs": {"kind": "cosine"}}))
    assert err.value.node_id == "field"


def test_a_fresh_backbone_needs_a_linked_path(registry):
    wf = Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "f", "nodes": {
        "net": {"type": "core/mlp_backbone", "inputs": {}},
        "field": {"type": "core/model_field", "inputs": {"backbone": link("net", "mlp")}}}})
    with pytest.raises(NodeFailed, match="records no training path"):
        Session(registry, device="cpu").run(wf)


# --- migrations ------------------------------------------------------------------------------------------------

def test_v1_nodes_migrate_to_the_same_results_as_v2_nodes(registry):
    """A workflow saved before the extension API (core/path v1 with every parameter, core/ode_solve v1
    with rtol/atol) gives exactly the samples of the same workflow written for v2."""
    v1 = _toy({**_solve("dopri5"), "path": {"type": "core/path", "inputs": {
        "kind": "cond_ot", "beta_min": 0.1, "beta_max": 20.0, "n": 2.0, "sigma_min": 0.01, "sigma_max": 80.0}}})
    v1.nodes["solve"].inputs.update(rtol=1e-4, atol=1e-4)
    v2 = _toy({**_solve("dopri5", version=2), "path": {"type": "core/path", "version": 2,
                                                        "inputs": {"kind": "cond_ot"}}})
    first, second = Session(registry, device="cpu").run(v1), Session(registry, device="cpu").run(v2)
    assert torch.equal(first.value("solve.latent"), second.value("solve.latent"))
    assert first.value("solve.nfe") == second.value("solve.nfe")


def test_a_v1_setting_that_v2_cannot_express_names_the_replacement(registry):
    wf = _toy({"path": {"type": "core/path", "inputs": {"kind": "vp", "beta_max": 10.0}}})
    problems = validate(wf, registry)
    assert [(p.kind, p.node) for p in problems] == [("stale_version", "path")]
    assert "core/vp_path" in problems[0].message
    wf = _toy({**_solve("dopri5")})
    wf.nodes["solve"].inputs["rtol"] = 1e-6
    problems = validate(wf, registry)
    assert [(p.kind, p.node) for p in problems] == [("stale_version", "solve")]
    assert "core/dopri5_solver" in problems[0].message


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "workflows").glob("*.json")))
def test_every_shipped_workflow_loads_and_migrates(registry, name):
    assert shipped_problems(Workflow.load(ROOT / "workflows" / name), registry) == []
