"""List nodes: values, ranges, seeds and prompts as lists, and sweeps (see `nodegraph.lists`).

A list output linked into an input that takes one value runs that node once per element; elements that
differ only in their noise (a list of seeds) are solved as one batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from nodegraph import ANY, INT, STRING, InputPath, ListOf, SweepOf, Widget, node

from .annotations import Seed

MAX_ELEMENTS = 4096
"""The longest list a list node makes (each element may run a whole branch of the graph)."""

MAX_PROMPT_FILE_BYTES = 1 << 20

Count = Annotated[int, Field(ge=1, le=MAX_ELEMENTS)]


@node("core/values", category="lists", display_name="Values (list)", outputs=("values",))
def values(values: Annotated[list[bool | int | float | str], Field(min_length=1, max_length=MAX_ELEMENTS)]
           = [1.0, 2.0],  # noqa: B006
           ) -> ListOf[ANY]:
    """A list of numbers or strings, e.g. guidance scales [1, 2, 4]: a node fed it where it takes one value
    runs once per element."""
    return list(values)


@node("core/range", category="lists", display_name="Range (list)", outputs=("values",))
def range_values(start: float = 0.0, stop: float = 4.0, step: Annotated[float, Field(gt=0)] = 1.0) -> ListOf[ANY]:
    """start, start + step, ... below stop (like Python's range; whole numbers when start and step are whole)."""
    count = max(0, math.ceil((stop - start) / step - 1e-9))
    if count > MAX_ELEMENTS:
        raise ValueError(f"range({start}, {stop}, {step}) has {count} elements; the limit is {MAX_ELEMENTS}")
    if count == 0:
        raise ValueError(f"range({start}, {stop}, {step}) is empty")
    whole = float(start).is_integer() and float(step).is_integer()
    return [int(start) + i * int(step) if whole else start + i * step for i in range(count)]


@node("core/seeds", category="lists", display_name="Seeds (list)", outputs=("seeds",))
def seeds(seed: Seed = 0, count: Count = 4) -> ListOf[INT]:
    """`count` seeds from `seed` on: seed, seed + 1, ... Fed into a noise node, each seed draws its own noise,
    and the solver downstream runs them all as one batch."""
    return [seed + i for i in range(count)]


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if line]
    if not found:
        raise ValueError("no prompt: every line is empty")
    if len(found) > MAX_ELEMENTS:
        raise ValueError(f"{len(found)} prompts; the limit is {MAX_ELEMENTS}")
    return found


@node("core/prompt_lines", category="lists", display_name="Prompts (lines)", outputs=("prompts",))
def prompt_lines(text: Annotated[str, Widget(kind="multiline")] = "a red circle\na blue square") -> ListOf[STRING]:
    """One prompt per non-empty line (surrounding spaces removed)."""
    return _lines(text)


@node("core/prompt_file", category="lists", display_name="Prompts (file)", outputs=("prompts",))
def prompt_file(path: InputPath) -> ListOf[STRING]:
    """One prompt per non-empty line of a UTF-8 text file (at most 1 MiB). Changing a line re-runs only
    what depends on that prompt."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"no text file at {file}")
    with file.open("rb") as handle:
        data = handle.read(MAX_PROMPT_FILE_BYTES + 1)
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise ValueError(f"{file} is larger than {MAX_PROMPT_FILE_BYTES} bytes")
    return _lines(data.decode("utf-8"))


@node("core/sweep", category="lists", display_name="Sweep", outputs=("values",))
def sweep(values: Annotated[list[Any], Field(min_length=1, max_length=MAX_ELEMENTS)] = [0, 1],  # noqa: B006
          ) -> SweepOf[ANY]:
    """Values to run the graph for, one run each (what `nodegraph run --sweep` inserts): unlike a list, a
    sweep is never taken whole by a list input, so every output stays per value, saved as its own files."""
    return list(values)
