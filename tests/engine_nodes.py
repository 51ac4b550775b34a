"""Small nodes for engine tests. They count their calls so tests can see what really ran."""

import random
import threading
from collections import Counter
from typing import Annotated, Literal, NamedTuple

from pydantic import Field

from nodegraph import ANY, FLOAT, INT, JSON, Context, InputPath, Lazy, node

CALLS: Counter = Counter()
GATES: dict[str, threading.Event] = {}
"""Events the tests own, by name, that `test/gate` waits on."""


@node("test/number", category="test")
def number(value: Annotated[float, Field(ge=-1000, le=1000)] = 1.0) -> float:
    """A constant."""
    CALLS["test/number"] += 1
    return value


@node("test/add", category="test")
def add(a: float, b: float = 0.0) -> float:
    """a + b."""
    CALLS["test/add"] += 1
    return a + b


@node("test/count", category="test")
def count(n: Annotated[int, Field(ge=0, le=100)] = 3, mode: Literal["up", "down"] = "up") -> int:
    """An integer."""
    CALLS["test/count"] += 1
    return n if mode == "up" else -n


class Split(NamedTuple):
    whole: INT
    fraction: FLOAT


@node("test/split", category="test")
def split(value: float) -> Split:
    """Integer and fractional part."""
    CALLS["test/split"] += 1
    return Split(int(value), value - int(value))


@node("test/sink", category="test", output_node=True, outputs=("value",))
def sink(value: ANY) -> ANY:
    """Marks a value as a run output."""
    CALLS["test/sink"] += 1
    return value


@node("test/record", category="test", side_effect=True, outputs=("value",))
def record(value: ANY) -> ANY:
    """A side effect: never cached."""
    CALLS["test/record"] += 1
    return value


@node("test/fail", category="test")
def fail(value: float, message: str = "boom") -> float:
    """Always raises."""
    raise RuntimeError(message)


@node("test/read_file", category="test")
def read_file(path: InputPath) -> str:
    """Text of a file; its content is part of the cache key."""
    CALLS["test/read_file"] += 1
    with open(path, encoding="utf-8") as handle:
        return handle.read()


@node("test/choose", category="test")
def choose(condition: bool, yes: Lazy[ANY], no: Lazy[ANY]) -> ANY:
    """Lazy switch."""
    CALLS["test/choose"] += 1
    return yes() if condition else no()


@node("test/slow", category="test")
def slow(ctx: Context, value: float, steps: int = 5, cancel_at: int = -1) -> float:
    """Reports progress each step; cancels its own run at `cancel_at` (for tests)."""
    CALLS["test/slow"] += 1
    for step in range(1, steps + 1):
        if step == cancel_at:
            ctx.cancel_token.cancel()
        ctx.progress(step, steps, value=value)
    return value


@node("test/bytes", category="test")
def big_bytes(size: Annotated[int, Field(ge=0)] = 1000, tag: int = 0) -> ANY:
    """A bytes object of `size` bytes (for cache-budget tests)."""
    CALLS["test/bytes"] += 1
    return bytes(size)


@node("test/versioned", category="test", version=3,
      migrations={1: lambda inputs: {**{k: v for k, v in inputs.items() if k != "old"}, "mid": inputs.get("old", 0)},
                  2: lambda inputs: {**{k: v for k, v in inputs.items() if k != "mid"}, "new": inputs.get("mid", 0)}})
def versioned(new: int = 0) -> int:
    """Renamed its input twice: old (v1) -> mid (v2) -> new (v3)."""
    return new


@node("test/unmigratable", category="test", version=2)
def unmigratable(value: int = 0) -> int:
    """Version 2 without a migration from 1."""
    return value


@node("test/scale", category="test", outputs=("tensor",))
def scale(tensor: ANY, factor: float = 1.0) -> ANY:
    """tensor * factor (overflows to inf for huge factors)."""
    return tensor * factor


@node("test/hold", category="test", outputs=("holder",))
def hold(value: ANY) -> ANY:
    """Wraps its input without copying (like a field holding a model)."""
    CALLS["test/hold"] += 1
    return {"held": value}


@node("test/tensor", category="test", outputs=("tensor",))
def tensor(numel: Annotated[int, Field(ge=1)] = 1000, tag: int = 0) -> ANY:
    """A float32 tensor of `numel` elements (4 bytes each)."""
    import torch

    CALLS["test/tensor"] += 1
    return torch.full((numel,), float(tag))


@node("test/allocate", category="test", outputs=("tensor",))
def allocate(ctx: Context, gigabytes: Annotated[float, Field(gt=0)] = 1.0) -> ANY:
    """An uninitialised float32 tensor of the given size on the run's device (for out-of-memory tests)."""
    import torch

    return torch.empty(int(gigabytes * 2**30 / 4), device=ctx.device)


@node("test/random", category="test")
def random_number(seed: Annotated[int, Field(ge=0)] = 0) -> float:
    """A pseudo-random number drawn from `seed` (no torch: fast)."""
    CALLS["test/random"] += 1
    return random.Random(seed).random()


@node("test/json", category="test", outputs=("value",))
def json_echo(value: JSON = None) -> JSON:
    """Returns its JSON value unchanged, type included (1, 1.0 and true stay apart)."""
    CALLS["test/json"] += 1
    return value


@node("test/spin", category="test")
def spin(ctx: Context, value: float, finish_on_cancel: bool = False,
         max_polls: Annotated[int, Field(ge=1)] = 10**7) -> float:
    """Busy until its run is cancelled (bounded by `max_polls`), for cancel-from-another-thread tests.

    A first progress report tells the test it is running. On cancel it raises (the usual long node)
    or, with `finish_on_cancel`, returns normally so that the engine must stop at the next node.
    """
    CALLS["test/spin"] += 1
    ctx.progress(0, 1)
    for _ in range(max_polls):
        if ctx.cancel_token.cancelled:
            if finish_on_cancel:
                return value
            ctx.check_cancelled()
    return value


@node("test/gate", category="test")
def gate(value: float, name: str = "") -> float:
    """Waits until the test sets GATES[name] (at most a minute), then passes `value` on: holds a run
    inside a node while the test does something else, without a sleep."""
    GATES[name].wait(timeout=60)
    return value
