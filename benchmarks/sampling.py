"""Sampling through the node graph vs a hand-written torch loop doing the same math.

A fixed small MLP (2-D, 4 classes, width 256, depth 4; plus a width-8 one where the overhead
dominates), 50 Euler steps with CFG (w = 4) on CondOT. The graph run is
Session.run on a workflow (noise -> model field -> cfg -> ode_solve) with a fresh noise seed per
repetition, so noise and solver really run; the loop draws the same seeded noise and steps
x += h [u(x|null) + w (u(x|c) - u(x|null))] with cond and null in one batched forward pass.
Also: cond + null batched in one pass vs two passes. Times are process CPU seconds
(time.process_time, torch on one thread) so that other jobs sharing the machine do not distort
them; median of interleaved repetitions.
Run: python -m benchmarks.sampling
"""

from __future__ import annotations

import statistics
import time

import torch

from nodegraph import Session, Workflow
from nodes.conditioning import Condition

STEPS = 50
SCALE = 4.0
NUM_CLASSES = 4


def workflow(batch: int, batched: bool = True, seed: int = 0, hidden: int = 256, depth: int = 4) -> Workflow:
    def ref(node_id: str, output: str) -> dict[str, str]:
        return {"from": node_id, "output": output}

    return Workflow.from_dict({"nodes": {
        "net": {"type": "core/mlp_backbone", "inputs": {"dim": 2, "hidden": hidden, "depth": depth,
                                                        "num_classes": NUM_CLASSES, "seed": 0}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "field": {"type": "core/model_field", "inputs": {"backbone": ref("net", "mlp"), "path": ref("path", "path")}},
        "label": {"type": "core/class_condition", "inputs": {"label": 1}},
        "null": {"type": "core/class_condition", "inputs": {"label": NUM_CLASSES}},
        "cfg": {"type": "core/cfg", "inputs": {
            "field": ref("field", "vector_field"), "cond": ref("label", "conditioning"),
            "null": ref("null", "conditioning"), "scale": SCALE, "batched": batched}},
        "noise": {"type": "core/noise", "inputs": {"shape": [batch, 2], "seed": seed}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": STEPS}},
        "solve": {"type": "core/ode_solve", "inputs": {
            "field": ref("cfg", "vector_field"), "noise": ref("noise", "latent"),
            "grid": ref("grid", "time_grid"), "method": "euler"}},
    }})


def hand_loop(net: torch.nn.Module, shape: tuple[int, int], seed: int, batched: bool = True) -> torch.Tensor:
    """The same sampler written by hand: seeded noise, then 50 Euler steps of CFG on the raw network."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    batch = x.shape[0]
    cond = Condition(labels=torch.full((batch,), 1, dtype=torch.long))
    null = Condition(labels=torch.full((batch,), NUM_CLASSES, dtype=torch.long))
    both = Condition(labels=torch.cat([cond.labels, null.labels]))
    times = torch.linspace(0, 1, STEPS + 1, dtype=torch.float64).float()
    with torch.no_grad():
        for i in range(STEPS):
            h = times[i + 1] - times[i]
            if batched:
                out = net(torch.cat([x, x]), times[i].expand(2 * batch), both)
                u_cond, u_null = out[:batch], out[batch:]
            else:
                t = times[i].expand(batch)
                u_cond, u_null = net(x, t, cond), net(x, t, null)
            x = x + h * (u_null + SCALE * (u_cond - u_null))
    return x


def _time(fn) -> float:  # noqa: ANN001
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(batch: int, repeats: int, hidden: int = 256, depth: int = 4) -> dict[str, float]:
    session = Session(device="cpu", output_dir="/tmp/nodegraph-bench")

    def build(seed: int, batched: bool = True) -> Workflow:
        return workflow(batch, batched, seed, hidden, depth)

    net = session.run(build(0), outputs=["net"])["net"]["mlp"]
    first = session.run(build(0), outputs=["solve"])
    expected = hand_loop(net, (batch, 2), 0)
    assert torch.allclose(first["solve"]["latent"], expected, atol=1e-5), "graph and hand loop disagree"
    times: dict[str, list[float]] = {"graph": [], "loop": [], "graph_two_pass": [], "loop_two_pass": []}
    for rep in range(1, repeats + 1):
        seed = 1000 + rep
        times["graph"].append(_time(lambda s=seed: session.run(build(s), outputs=["solve"])))
        times["loop"].append(_time(lambda s=seed: hand_loop(net, (batch, 2), s)))
        times["graph_two_pass"].append(_time(lambda s=seed: session.run(build(s, False), outputs=["solve"])))
        times["loop_two_pass"].append(_time(lambda s=seed: hand_loop(net, (batch, 2), s, batched=False)))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread; class-conditional MLPs, "
          f"{STEPS} Euler steps, CFG w={SCALE}; median process CPU time")
    print(f"{'net':>10} {'batch':>6} {'graph ms':>9} {'loop ms':>8} {'ratio':>6} | "
          f"{'2-pass graph':>12} {'2-pass loop':>11} {'batched/2-pass':>14}")
    for name, hidden, depth, batch, repeats in (("2-8x1", 8, 1, 1, 41), ("2-256x4", 256, 4, 64, 21),
                                                ("2-256x4", 256, 4, 512, 7), ("2-256x4", 256, 4, 2048, 3)):
        r = measure(batch, repeats, hidden, depth)
        print(f"{name:>10} {batch:>6} {1e3 * r['graph']:>9.1f} {1e3 * r['loop']:>8.1f} "
              f"{r['graph'] / r['loop']:>6.3f} | "
              f"{1e3 * r['graph_two_pass']:>12.1f} {1e3 * r['loop_two_pass']:>11.1f} "
              f"{r['graph'] / r['graph_two_pass']:>14.3f}")


if __name__ == "__main__":
    main()
