"""README.md's "Writing a node" example runs: registered as a plugin's node, its field works with every
registered solver and the SDE solver, and a bare lambda on a VECTOR_FIELD output is refused."""

import re
from pathlib import Path

import pytest
import torch

from nodegraph import Session, Workflow, node
from nodegraph.plugins import load_registry
from nodegraph.session import NodeFailed
from nodes.api import VECTOR_FIELD

README = Path(__file__).resolve().parent.parent / "README.md"
BATCH = 64


def readme_node():
    text = README.read_text()
    section = text[text.index("## Writing a node"):]
    source = re.search(r"^```python\n(.*?)^```", section, re.S | re.M).group(1)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(source, "README.md: Writing a node", "exec"), namespace)
    return namespace["scale_field"]


@pytest.fixture(scope="module")
def registry():
    registry, report = load_registry(entry_points=False)
    assert not report.failures
    registry.registrar("mine").add_node(readme_node())
    return registry


def workflow(solve: dict, **extra: dict) -> Workflow:
    return Workflow.from_dict({
        "format": "nodegraph/workflow", "version": 1, "name": "readme example",
        "nodes": {
            "mixture": {"type": "core/toy_mixture", "inputs": {}},
            "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
            "field": {"type": "core/toy_field", "inputs": {"mixture": {"from": "mixture", "output": "mixture"},
                                                           "path": {"from": "path", "output": "path"}}},
            "scaled": {"type": "mine/scale_field", "inputs": {"field": {"from": "field", "output": "vector_field"},
                                                              "factor": 1.0}},
            "noise": {"type": "core/noise", "inputs": {"shape": [BATCH, 2], "seed": 0}},
            "grid": {"type": "core/uniform_grid", "inputs": {"steps": 8}},
            "sigma": {"type": "core/sigma_schedule", "inputs": {"kind": "beta"}},
            "solve": solve,
            **extra,
        },
    })


def field_inputs(source: str) -> dict:
    return {"field": {"from": source, "output": "vector_field"}, "noise": {"from": "noise", "output": "latent"},
            "grid": {"from": "grid", "output": "time_grid"}}


def samples_by_factor(registry, wf: Workflow) -> dict[float, torch.Tensor]:
    session = Session(registry, device="cpu")
    found = {}
    for factor in (1.0, 0.5):
        wf.set("scaled.factor", factor)
        found[factor] = session.run(wf, outputs=["solve"]).outputs["solve"]["latent"]
    return found


def check(samples: dict[float, torch.Tensor]) -> None:
    for latent in samples.values():
        assert latent.shape == (BATCH, 2) and torch.isfinite(latent).all()
    assert not torch.allclose(samples[1.0], samples[0.5])


def test_the_readme_node_works_with_every_registered_solver(registry):
    solvers = registry.component_names("solver")
    assert {"euler", "heun", "rk4", "dopri5", "ddim"} <= set(solvers)
    for method in solvers:
        wf = workflow({"type": "core/ode_solve", "inputs": {**field_inputs("scaled"), "method": method}})
        check(samples_by_factor(registry, wf))


def test_the_readme_node_works_with_the_sde_solver(registry):
    solve = {"type": "core/sde_solve",
             "inputs": {**field_inputs("scaled"), "sigma": {"from": "sigma", "output": "sigma_schedule"}, "seed": 0}}
    check(samples_by_factor(registry, workflow(solve)))


def test_a_bare_lambda_is_refused_by_the_node_that_consumes_it(registry):
    @node("mine/bare_lambda")
    def bare_lambda(field: VECTOR_FIELD) -> VECTOR_FIELD:
        return lambda x, t, cond=None: field(x, t, cond)

    registry.registrar("mine").add_node(bare_lambda)
    bare = {"type": "mine/bare_lambda", "inputs": {"field": {"from": "field", "output": "vector_field"}}}
    wf = workflow({"type": "core/ode_solve", "inputs": field_inputs("bare")}, bare=bare)
    with pytest.raises(NodeFailed) as failure:
        Session(registry, device="cpu").run(wf, outputs=["solve"])
    assert failure.value.node_id == "solve" and failure.value.type_id == "core/ode_solve"
    assert "input 'field'" in str(failure.value) and "expected VECTOR_FIELD" in str(failure.value)
