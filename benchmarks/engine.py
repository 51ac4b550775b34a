"""Scheduling overhead per node: a 1,000-node chain and a 10,000-node random DAG of trivial nodes.

Reports microseconds per node for validation (compile), a cold run (every node executes) and a
fully cached run (the Merkle keys are recomputed and the outputs come from the cache).
"""

from __future__ import annotations

import random
import time

from nodegraph import Registry, Session, Workflow, compile_workflow, node


@node("bench/add", category="bench")
def bench_add(a: float = 0.0, b: float = 0.0) -> float:
    """a + b, the cheapest useful node."""
    return a + b


def chain(size: int) -> Workflow:
    nodes = {"n0": {"type": "bench/add", "inputs": {"a": 1.0}}}
    for i in range(1, size):
        nodes[f"n{i}"] = {"type": "bench/add", "inputs": {"a": {"from": f"n{i - 1}", "output": "float"}, "b": 1.0}}
    return Workflow.from_dict({"nodes": nodes})


def random_dag(size: int, seed: int = 0) -> Workflow:
    rng = random.Random(seed)
    nodes = {"n0": {"type": "bench/add", "inputs": {"a": 1.0}}}
    for i in range(1, size):
        inputs: dict = {"a": {"from": f"n{rng.randrange(max(0, i - 50), i)}", "output": "float"}}
        if rng.random() < 0.5:
            inputs["b"] = {"from": f"n{rng.randrange(0, i)}", "output": "float"}
        nodes[f"n{i}"] = {"type": "bench/add", "inputs": inputs}
    return Workflow.from_dict({"nodes": nodes})


def measure(name: str, workflow: Workflow, registry: Registry, repeats: int = 3) -> dict:
    size = len(workflow.nodes)
    best = {"validate": float("inf"), "cold": float("inf"), "cached": float("inf")}
    for _ in range(repeats):
        started = time.perf_counter()
        plan = compile_workflow(workflow, registry)
        best["validate"] = min(best["validate"], time.perf_counter() - started)
        session = Session(registry, device="cpu")
        targets = plan.order  # every node is an output: the worst case for the cached walk
        started = time.perf_counter()
        session.run(plan, outputs=targets)
        best["cold"] = min(best["cold"], time.perf_counter() - started)
        started = time.perf_counter()
        result = session.run(plan, outputs=targets)
        best["cached"] = min(best["cached"], time.perf_counter() - started)
        assert not result.ran
    return {"graph": name, "nodes": size, **{k: v for k, v in best.items()}}


def main() -> None:
    registry = Registry()
    registry.current_plugin = "bench"
    registry.add_node(bench_add)
    rows = [measure("chain", chain(1_000), registry), measure("random DAG", random_dag(10_000), registry)]
    print(f"{'graph':<12}{'nodes':>7}{'validate ms':>13}{'us/node':>9}{'cold us/node':>14}"
          f"{'cached us/node':>16}")
    for row in rows:
        n = row["nodes"]
        print(f"{row['graph']:<12}{n:>7}{row['validate'] * 1e3:>13.1f}{row['validate'] / n * 1e6:>9.1f}"
              f"{row['cold'] / n * 1e6:>14.1f}{row['cached'] / n * 1e6:>16.1f}")
    print("goals: cold < 50 us/node, cached < 5 us/node, validation of 10,000 nodes < 1 s")


if __name__ == "__main__":
    main()
