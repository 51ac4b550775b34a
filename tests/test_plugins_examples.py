"""The example plugins in plugins/, installed with pip into a temporary folder and used through the CLI.

Each plugin folder is copied (so no build/ or egg-info lands in the source tree) and installed with
`pip install --no-deps --no-build-isolation --no-index --target SITE`; SITE on PYTHONPATH makes its
entry points visible to `python -m nodegraph.cli`. A small folder plugin `probe` (written here) turns
results into numbers the CLI prints, so the workflows' results are checked, not just their exit codes.
"""

import ast
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nodegraph.plugins import load_registry

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = {"sampler_example": "nodegraph-sampler-example", "guidance_example": "nodegraph-guidance-example",
           "backbone_example": "nodegraph-backbone-example"}

PROBE = '''
import torch
from nodegraph import hookimpl, node
from nodes.api import TENSOR

@node("probe/stats", category="test")
def stats(x: TENSOR) -> dict:
    """Per-dimension mean and std of a (B, D) tensor."""
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist()}

@node("probe/max_abs_diff", category="test")
def max_abs_diff(a: TENSOR, b: TENSOR) -> float:
    """max |a - b|."""
    return float((a - b).abs().max())

@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_nodes([stats, max_abs_diff])
'''


def link(source: str, output: str) -> dict:
    return {"from": source, "output": output}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The three example plugins pip-installed into one target folder (offline, no dependencies)."""
    work = tmp_path_factory.mktemp("plugin_install")
    sources = []
    for folder in PLUGINS.values():
        copy = work / "src" / folder
        shutil.copytree(ROOT / "plugins" / folder, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        sources.append(str(copy))
    target = work / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(target), *sources],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("probe_plugins")
    (folder / "probe.py").write_text(PROBE)
    return folder


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    env.pop("NODEGRAPH_PLUGINS", None)
    return subprocess.run([sys.executable, "-m", "nodegraph.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def printed(stdout: str, address: str):
    """The Python value the CLI printed as `address = value`."""
    for line in stdout.splitlines():
        if line.startswith(f"{address} = "):
            return ast.literal_eval(line.split(" = ", 1)[1])
    raise AssertionError(f"{address} not in output:\n{stdout}")


def workflow_with(path: Path, tmp_path: Path, extra: dict, drop: tuple[str, ...] = ("plot", "save", "data")) -> str:
    data = json.loads(path.read_text())
    for name in drop:
        data["nodes"].pop(name, None)
    data["nodes"].update(extra)
    out = tmp_path / path.name
    out.write_text(json.dumps(data))
    return str(out)


def test_plugins_command_lists_the_installed_examples(site):
    proc = cli(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {p["name"]: p for p in json.loads(proc.stdout)}
    assert {"core", *PLUGINS} <= set(listed)
    for name in PLUGINS:
        info = listed[name]
        assert info["error"] is None and info["version"] == "0.2.0"
        assert info["source"].startswith("entry point nodegraph_")
        assert info["nodes"] and all(n.startswith(f"{name}/") for n in info["nodes"])
    assert set(listed["sampler_example"]["nodes"]) == {"sampler_example/ddim_eta"}


def test_plugin_components_are_choices_of_the_built_in_nodes(site):
    """The plugins' solvers, guidance method and architecture are offered by the built-in nodes' dropdowns."""
    proc = cli(site, "nodes", "--json")
    assert proc.returncode == 0, proc.stderr
    nodes = {n["id"]: n for n in json.loads(proc.stdout)["nodes"]}
    solvers = nodes["core/ode_solve"]["inputs"]["method"]["schema"]["enum"]
    assert {"euler", "dopri5", "dpmpp_2m", "ddim_eta"} <= set(solvers)
    assert "apg" in nodes["core/cfg"]["inputs"]["method"]["schema"]["enum"]
    assert "rtol" not in nodes["core/ode_solve"]["inputs"]  # dopri5's options live on core/dopri5_solver


def test_sampler_plugin_workflow_through_cli(site, probe_dir, tmp_path):
    """One Gaussian N((3, 0), 0.5^2 I): the ODE maps noise x to (3, 0) + 0.5 x, so the samples' stats are known."""
    shipped = ROOT / "plugins" / PLUGINS["sampler_example"] / "workflows" / "toy_dpmpp_2m.json"
    wf = workflow_with(shipped, tmp_path, {"stats": {"type": "probe/stats", "inputs": {"x": link("sample", "latent")}}})
    assert json.loads(Path(wf).read_text())["nodes"]["sample"]["type"] == "core/ode_solve"
    proc = cli(site, "run", wf, "--plugins-dir", str(probe_dir), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", "mixture.components=1", "--set", "mixture.radius=3.0",
               "--set", "mixture.std=0.5", "--set", "mixture.num_classes=1")
    assert proc.returncode == 0, proc.stderr
    stats = printed(proc.stdout, "stats.json")
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    assert stats["mean"] == pytest.approx([3.0 + 0.5 * float(noise[:, 0].mean()), 0.5 * float(noise[:, 1].mean())],
                                          abs=0.03)
    assert stats["std"] == pytest.approx((0.5 * noise.std(0)).tolist(), abs=0.03)


def test_guidance_plugin_workflow_through_cli(site, probe_dir, tmp_path):
    """APG with eta = 1 and no norm cap is exactly CFG: the same samples as core/cfg's own method."""
    shipped = ROOT / "plugins" / PLUGINS["guidance_example"] / "workflows" / "toy_apg.json"
    cfg_inputs = {"field": link("field", "vector_field"), "cond": link("label", "conditioning"),
                  "null": link("null", "conditioning"), "scale": 4.0}
    solve_inputs = {"field": link("cfg", "vector_field"), "noise": link("noise", "latent"),
                    "grid": link("grid", "time_grid"), "method": "euler"}
    extra = {
        "cfg": {"type": "core/cfg", "inputs": {**cfg_inputs, "method": "cfg"}},
        "solve_cfg": {"type": "core/ode_solve", "inputs": solve_inputs},
        "diff": {"type": "probe/max_abs_diff",
                 "inputs": {"a": link("solve", "latent"), "b": link("solve_cfg", "latent")}},
    }
    wf = workflow_with(shipped, tmp_path, extra)
    proc = cli(site, "run", wf, "--plugins-dir", str(probe_dir), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", "noise.shape=[200,2]", "--set", "grid.steps=10",
               "--set", "apg.eta=1.0", "--set", "apg.norm_threshold=0")
    assert proc.returncode == 0, proc.stderr
    assert printed(proc.stdout, "diff.float") < 1e-4
    proc = cli(site, "run", wf, "--plugins-dir", str(probe_dir), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", "noise.shape=[200,2]", "--set", "grid.steps=10",
               "--set", "apg.eta=0.0", "--set", "apg.norm_threshold=0")
    assert proc.returncode == 0, proc.stderr
    assert printed(proc.stdout, "diff.float") > 1e-2  # eta = 0 drops the parallel part: not CFG any more


def test_backbone_plugin_train_save_load_sample_through_cli(site, probe_dir, tmp_path):
    folder = ROOT / "plugins" / PLUGINS["backbone_example"] / "workflows"
    proc = cli(site, "run", str(folder / "train_fourier_mlp.json"), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", "train.steps=5", "--set", "train.batch_size=32")
    assert proc.returncode == 0, proc.stderr
    checkpoint = Path(printed(proc.stdout, "save.path"))
    header = json.loads(_safetensors_metadata(checkpoint)["nodegraph"])
    assert header["arch"] == "fourier_mlp" and header["config"]["frequencies"] == 16
    assert header["training"]["steps"] == 5
    wf = workflow_with(folder / "sample_fourier_mlp.json", tmp_path,
                       {"stats": {"type": "probe/stats", "inputs": {"x": link("solve", "latent")}}})
    proc = cli(site, "run", wf, "--plugins-dir", str(probe_dir), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", f"load.file={checkpoint}", "--set", "noise.shape=[16,2]",
               "--set", "grid.steps=2")
    assert proc.returncode == 0, proc.stderr
    stats = printed(proc.stdout, "stats.json")
    assert len(stats["mean"]) == 2 and all(math.isfinite(v) for v in stats["mean"] + stats["std"])
    # a registered architecture is loaded by the built-in loader too, to the same samples
    wf = workflow_with(folder / "sample_fourier_mlp.json", tmp_path, {
        "stats": {"type": "probe/stats", "inputs": {"x": link("solve", "latent")}},
        "load": {"type": "core/load_backbone", "inputs": {"file": str(checkpoint)}},
        "field": {"type": "core/model_field", "inputs": {"backbone": link("load", "backbone"),
                                                         "path": link("path", "path")}}})
    proc = cli(site, "run", wf, "--plugins-dir", str(probe_dir), "--device", "cpu", "--events", "none",
               "--out", str(tmp_path), "--set", "noise.shape=[16,2]", "--set", "grid.steps=2")
    assert proc.returncode == 0, proc.stderr
    assert printed(proc.stdout, "stats.json") == stats


def _safetensors_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_missing_plugin_is_named_by_namespace(tmp_path):
    """Without the plugin installed, a workflow using its nodes says which namespace is missing, and one
    using its solver names the solver and the registered ones."""
    shipped = ROOT / "plugins" / PLUGINS["guidance_example"] / "workflows" / "toy_apg.json"
    proc = cli(tmp_path, "validate", str(shipped))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown node type 'guidance_example/apg'" in proc.stderr
    assert "namespace 'guidance_example'" in proc.stderr
    shipped = ROOT / "plugins" / PLUGINS["sampler_example"] / "workflows" / "toy_dpmpp_2m.json"
    proc = cli(tmp_path, "validate", str(shipped))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown solver 'dpmpp_2m'" in proc.stderr and "registered: [" in proc.stderr


# --- in-process checks of the plugins' math and schemas (imported from the source folders) ---------------------

@pytest.fixture()
def plugin_sources(monkeypatch):
    for folder in PLUGINS.values():
        monkeypatch.syspath_prepend(str(ROOT / "plugins" / folder))


def test_plugin_node_schemas_are_complete_for_the_palette(plugin_sources):
    import nodegraph_backbone_example
    import nodegraph_guidance_example
    import nodegraph_sampler_example

    registry, _ = load_registry(entry_points=False)
    modules = {"sampler_example": nodegraph_sampler_example, "guidance_example": nodegraph_guidance_example,
               "backbone_example": nodegraph_backbone_example}
    for name, module in modules.items():
        registrar = registry.registrar(name)
        for hook in ("nodegraph_register_types", "nodegraph_register_components", "nodegraph_register_nodes"):
            if hasattr(module, hook):
                getattr(module, hook)(registry=registrar)
        assert module.NODEGRAPH_API_VERSION == 1
    plugin_nodes = [t for t in registry.nodes.values() if t.plugin in PLUGINS]
    assert len(plugin_nodes) == 4
    for node_type in plugin_nodes:
        schema = json.loads(json.dumps(node_type.schema(registry)))  # JSON-serialisable, as served to the browser
        assert schema["plugin"] == node_type.id.split("/")[0]
        assert schema["category"] in {"solvers", "guidance", "models"}
        assert schema["display_name"] and len(schema["description"]) > 40
        for spec in schema["inputs"].values():
            assert spec["type"] in registry.types
            if spec["widget"]:
                assert spec["schema"].get("type") or spec["schema"].get("enum") or spec["schema"].get("anyOf")
        assert all(out["type"] in registry.types for out in schema["outputs"].values())


def _single_gaussian():
    from nodes.paths import CondOTPath
    from nodes.toy import GMMField, preset_mixture

    path = CondOTPath()
    return path, GMMField(preset_mixture("ring", 1, 3.0, 0.5, 1.0, 1), path)


def test_dpmpp_2m_is_second_order_and_beats_euler(plugin_sources):
    """Exact flow map of N(m, s^2 I) on the CondOT path: x_t = t m + sqrt(t^2 s^2 + (1 - t)^2) x_0."""
    from nodegraph_sampler_example.samplers import dpmpp_2m

    from nodes.solvers import euler

    _, field = _single_gaussian()
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean = torch.tensor([3.0, 0.0], dtype=torch.float64)

    def error(solver, steps: int, t_end: float) -> float:
        grid = torch.linspace(0, t_end, steps + 1, dtype=torch.float64)
        exact = t_end * mean + math.sqrt(t_end**2 * 0.25 + (1 - t_end) ** 2) * x
        run = solver(field, x, grid)
        return float((run - exact).abs().max())

    coarse, fine = error(dpmpp_2m, 10, 0.5), error(dpmpp_2m, 20, 0.5)
    assert coarse / fine > 3.3  # halving h divides the error by ~4: second order
    assert error(dpmpp_2m, 10, 1.0) < error(euler, 10, 1.0) / 5


def test_plugin_solvers_invert_on_a_decreasing_grid(plugin_sources):
    """core/invert runs a solver from t = 1 back to t = 0. The noise of a data point z of N(m, s^2 I) is
    (z - m) / s: DPM-Solver++(2M) reaches it (first order at the two ends, where lambda is infinite)
    and so does deterministic DDIM; stochastic DDIM refuses to run backwards."""
    from nodegraph_sampler_example.samplers import ddim_eta, dpmpp_2m

    _, field = _single_gaussian()
    mean = torch.tensor([3.0, 0.0], dtype=torch.float64)
    data = mean + 0.5 * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def error(solver, steps: int, **options) -> float:
        grid = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
        return float((solver(field, data, grid, **options) - (data - mean) / 0.5).abs().max())

    coarse, fine = error(dpmpp_2m, 20), error(dpmpp_2m, 40)
    assert fine < coarse / 2.5 and fine < 0.05
    assert error(ddim_eta, 40, eta=0.0) < 0.15
    with pytest.raises(ValueError, match="forward in time only"):
        error(ddim_eta, 4, eta=0.5)


def test_stochastic_ddim_converges_to_the_marginals(plugin_sources):
    """eta = 1 re-noises every step; the final std's bias against the data std 0.5 shrinks like h (first order)."""
    from nodegraph_sampler_example.samplers import ddim_eta

    _, field = _single_gaussian()
    x = torch.randn(5000, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    runs = {}
    for steps in (20, 80):
        grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        runs[steps] = ddim_eta(field, x, grid, eta=1.0, seed=steps)
    bias = {steps: abs(float(run.std(0).mean()) - 0.5) for steps, run in runs.items()}
    assert bias[20] / bias[80] > 2.5 and bias[80] < 0.03
    assert runs[80].mean(0).tolist() == pytest.approx([3.0, 0.0], abs=0.02)
    grid = torch.linspace(0, 1, 21, dtype=torch.float64)
    deterministic = ddim_eta(field, x, grid, eta=0.0)
    assert torch.equal(deterministic, ddim_eta(field, x, grid, eta=0.0))
    assert float((runs[20] - deterministic).abs().mean()) > 0.1  # the noise really changes the samples


def test_apg_update_is_orthogonal_to_the_conditional_prediction(plugin_sources):
    """eta = 0: x0(u~) - x0(u_c) has no component along x0(u_c); a norm cap r bounds it by (w - 1) r."""
    from nodegraph_guidance_example.apg import APG

    from nodes.conditioning import Condition
    from nodes.guidance import CFGField
    from nodes.paths import CondOTPath
    from nodes.toy import GMMField, preset_mixture

    path = CondOTPath()
    field = GMMField(preset_mixture("ring", 8, 4.0, 0.4, 1.0, 4), path)
    cond, null = Condition(labels=torch.tensor([0])), Condition(labels=torch.tensor([4]))
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((64,), 0.4)
    u_c = field(x, t, cond.expand(64))

    def x0(u):  # CondOT: x = t x0 + (1 - t) eps, u = x0 - eps  =>  x0 = x + (1 - t) u
        return x + 0.6 * u

    guided = CFGField(field, cond, null, 4.0, method=APG.configured(eta=0.0))(x, t)
    delta = x0(guided) - x0(u_c)
    assert float(delta.abs().max()) > 0.1
    assert torch.allclose((delta * x0(u_c)).sum(-1), torch.zeros(64), atol=1e-4)
    capped = CFGField(field, cond, null, 4.0, method=APG.configured(eta=1.0, norm_threshold=0.1))(x, t)
    assert float((x0(capped) - x0(u_c)).norm(dim=-1).max()) <= 3 * 0.1 + 1e-5
