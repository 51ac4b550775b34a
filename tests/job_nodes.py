"""Nodes and workflows for the job queue tests: a job that blocks until cancelled, one held at a gate,
one that fails, quick ones, and one that saves images. No sleeps: blocking nodes wait on events."""

from __future__ import annotations

import threading

from nodegraph import Context, node

GATES: dict[str, threading.Event] = {}
"""Events the tests own, by name, that `jobs/gate` waits on."""


@node("jobs/until_cancelled", category="test")
def until_cancelled(ctx: Context, value: float = 1.0) -> float:
    """Reports one progress step (a follower then knows it runs), then blocks until its job is
    cancelled or the server stops (at most 10 minutes)."""
    ctx.progress(0, 1)
    ctx.cancel_token.wait(timeout=600)
    ctx.check_cancelled()
    return value


@node("jobs/gate", category="test")
def gate(value: float = 1.0, name: str = "") -> float:
    """Waits until the test sets GATES[name] (at most a minute), then passes `value` on."""
    GATES[name].wait(timeout=60)
    return value


@node("jobs/fail", category="test")
def fail(value: float = 1.0) -> float:
    """Always raises."""
    raise RuntimeError("boom")


NODES = [until_cancelled, gate, fail]

PLUGIN_SOURCE = '''
from nodegraph import Context, hookimpl, node


@node("hold/until_cancelled", category="test")
def until_cancelled(ctx: Context, value: float = 1.0) -> float:
    ctx.progress(0, 1)
    ctx.cancel_token.wait(timeout=600)
    ctx.check_cancelled()
    return value


@hookimpl
def nodegraph_register_nodes(registry):
    registry.add_node(until_cancelled)
'''
"""The blocking node as a plugin file `hold.py`, for a server started in a subprocess."""


def workflow(nodes: dict, name: str = "job") -> dict:
    return {"format": "nodegraph/workflow", "version": 1, "name": name, "nodes": nodes}


def quick(seed: int = 1, name: str = "quick") -> dict:
    """One cheap node: runs in milliseconds (a new seed is a new cache key)."""
    return workflow({"seed": {"type": "core/seed", "inputs": {"seed": seed}}}, name)


def blocking(node_type: str = "jobs/until_cancelled", value: float = 1.0) -> dict:
    return workflow({"hold": {"type": node_type, "inputs": {"value": value}}}, "blocking")


def gated(name: str, value: float = 1.0) -> dict:
    return workflow({"gate": {"type": "jobs/gate", "inputs": {"value": value, "name": name}}}, "gated")


def saving(seed: int, prefix: str = "job") -> dict:
    """random tensor -> image -> save_image into the output folder (and a preview of the image)."""
    return workflow({
        "noise": {"type": "core/random_tensor", "inputs": {"shape": [2, 3, 8, 8], "seed": seed}},
        "image": {"type": "core/to_image", "inputs": {"tensor": {"from": "noise", "output": "tensor"}}},
        "save": {"type": "core/save_image", "inputs": {"images": {"from": "image", "output": "image"},
                                                       "prefix": prefix}},
    }, "saving")
