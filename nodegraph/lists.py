"""List values inside a graph: declaring list sockets, combining list inputs, keys of elements, batching.

A link *carries a list* when its output is declared `ListOf[T]` (or `SweepOf[T]`), or when its node runs
once per element of a list (it is *mapped*). What an input does with a list is decided by its
declaration, never by the value at run time:

* an input that takes a list (`ListOf[T]`, or a list widget such as `list[float]`) receives the whole
  list when the elements fit its element type;
* any other input, fed a list whose elements fit it, makes its node run once per element; several
  such inputs are combined by the node's `list_mode`, "zip" (element i with element i, equal lengths)
  or "product" (every combination, the first input outermost). The outputs become lists.

A literal value is never mapped: `[1, 2]` typed into a `list[float]` widget is one list.

There are two kinds of list. A *list* (`ListOf`) is data: list inputs take it whole. A *sweep*
(`SweepOf`, what `nodegraph run --sweep` inserts) is a list of runs: every node maps over it, list
inputs too, so each element ends in its own outputs, like separate runs sharing one cache. A sweep is
always the outer level: a node mapped over a sweep may produce, or map over, a list inside each
sweep element (a sweep of lists), but lists of lists and sweeps of sweeps are refused.

Each element has its own cache key: a plain element (number, string, JSON) is keyed by its content,
any other by its producer's key and index; an element computed by a mapped node is keyed like a
node, from the keys of the elements it received. Changing one element re-runs that element only.

`BatchAxis(dim)` on a tensor input and on outputs lets the scheduler run several elements that differ
only in that input as one call: their tensors are concatenated along `dim`, the node runs once, and
the outputs marked `BatchAxis` are split back per element (unmarked outputs are shared). Inside such
a call `batch_tiles()` is the number of elements, so a per-sample value of batch b (class labels of a
grid of digits) may tile itself to the concatenated batch k b. A value given to such a node with
`samples_independent = False` (an adaptive solver, an attention-editing field) keeps the elements
apart.
"""

from __future__ import annotations

import contextvars
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from .cache_key import canonical_json

ListKind = Literal["list", "sweep"]
ListMode = Literal["zip", "product"]
LIST_MODES: tuple[str, ...] = ("zip", "product")


@dataclass(frozen=True)
class ListMarker:
    """`Annotated[T, LIST]`: the socket carries a list of T values (or a sweep of them)."""

    kind: ListKind

    def __repr__(self) -> str:
        return "ListOf" if self.kind == "list" else "SweepOf"


LIST = ListMarker("list")
SWEEP = ListMarker("sweep")


class ListOf:
    """`ListOf[IMAGE]`: an input that takes a whole list of IMAGE values (a single IMAGE becomes a list of
    one), or an output that returns a Python list of them."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, LIST]


class SweepOf:
    """`SweepOf[ANY]`: an output whose elements are separate runs: every node downstream maps over it."""

    def __class_getitem__(cls, item: Any) -> Any:
        return Annotated[item, SWEEP]


@dataclass(frozen=True)
class BatchAxis:
    """`Annotated[TENSOR, BatchAxis(0)]`: axis `dim` holds independent samples. On inputs: several list
    elements differing only there may run as one call, concatenated along `dim`. On outputs: split back
    per element along `dim` after such a call."""

    dim: int = 0


class ListLengthError(ValueError):
    """Lists zipped at a node have different lengths."""


@dataclass(frozen=True)
class ListValue:
    """A list travelling on a link at run time: its items, each item's cache key, and its kind.

    Nodes never see this class: a list input receives a plain Python list, a mapped input one item.
    The items of a sweep of lists are themselves `ListValue`s."""

    items: tuple[Any, ...]
    keys: tuple[bytes, ...]
    kind: ListKind = "list"

    def __len__(self) -> int:
        return len(self.items)

    def plain(self) -> list[Any]:
        """The items as nested Python lists (what `RunResult` shows)."""
        return [item.plain() if isinstance(item, ListValue) else item for item in self.items]


def plain(value: Any) -> Any:
    return value.plain() if isinstance(value, ListValue) else value


def collection_key(keys: Sequence[bytes]) -> bytes:
    """The key of a whole list from its items' keys, in order."""
    hasher = hashlib.blake2b(b"list\x00", digest_size=16)
    for key in keys:
        hasher.update(key)
    return hasher.digest()


_PLAIN = (type(None), bool, int, float, str)


def _is_plain(value: Any, depth: int = 0) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if depth < 16 and isinstance(value, (list, tuple)):
        return all(_is_plain(item, depth + 1) for item in value)
    if depth < 16 and isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def item_keys(producer_key: bytes, output: str, items: Sequence[Any]) -> tuple[bytes, ...]:
    """Keys of a declared list output's items: plain values (numbers, strings, JSON) by content, so an
    element keeps its key wherever it stands in the list; anything else by producer, output and index."""
    keys = []
    for index, item in enumerate(items):
        if _is_plain(item):
            body = b"item\x00" + canonical_json(item).encode()
        else:
            body = b"at\x00" + producer_key + f"\x00{output}\x00{index}".encode()
        keys.append(hashlib.blake2b(body, digest_size=16).digest())
    return tuple(keys)


def combine(mode: str, lengths: dict[str, int], level: ListKind = "list") -> list[dict[str, int]]:
    """Index of each named list per element: zip (equal lengths, element i with element i) or product
    (every combination, row-major in the given order). A sweep level always zips."""
    names = list(lengths)
    if not names:
        return [{}]
    if mode == "product" and level == "list":
        ranges = [range(lengths[name]) for name in names]
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*ranges)]
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{name!r} has {size}" for name, size in lengths.items())
        if level == "sweep":
            raise ListLengthError(f"sweeps of different lengths meet here ({sizes} elements); "
                                  "a sweep pairs element i with element i")
        raise ListLengthError(f"list_mode zip needs lists of equal length, but {sizes} elements "
                              "(set \"list_mode\": \"product\" on this node for every combination)")
    return [{name: index for name in names} for index in range(lengths[names[0]])]


_TILES: contextvars.ContextVar[int] = contextvars.ContextVar("nodegraph_batch_tiles", default=1)


def batch_tiles() -> int:
    """How many list elements the running node call holds, concatenated along their batch axis (1 when
    the call is one element). A per-sample value of batch b meeting a batch of `batch_tiles() * b`
    belongs to each element alike and may be tiled (see `nodes.conditioning.Condition.expand`)."""
    return _TILES.get()


@contextmanager
def tiled(count: int) -> Iterator[None]:
    token = _TILES.set(count)
    try:
        yield
    finally:
        _TILES.reset(token)


@dataclass
class ElementCounts:
    """Which elements of a mapped node ran and which came from the cache (or from an identical element
    of the same run), by their position in the node's output list (flattened, row-major)."""

    ran: list[int] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.ran) + len(self.cached)


# Running a node once per element -------------------------------------------------------------------

Tree = list[Any]
"""The shape of a mapped node's elements: per level a list of children, a leaf is the element's index."""


@dataclass
class Element:
    """One call of a mapped node: what each linked input receives (an item, a list taken whole, or the
    source's one value) and the cache key of each of those values."""

    received: dict[str, Any]
    parts: dict[str, bytes]


def expand(levels: tuple[str, ...], mode: str, inputs: dict[str, tuple[Any, bytes, tuple[str, ...]]]
           ) -> tuple[list[Element], Tree]:
    """The elements of a node running over `levels` (outer first), from each linked input's (value, key,
    levels it maps over), in the node's input order: at each level the inputs mapping over it are
    combined (`combine`); the others are passed on unchanged."""
    elements: list[Element] = []

    def walk(depth: int, current: dict[str, tuple[Any, bytes, tuple[str, ...]]]) -> Any:
        if depth == len(levels):
            elements.append(Element({n: v for n, (v, _, _) in current.items()},
                                    {n: k for n, (_, k, _) in current.items()}))
            return len(elements) - 1
        level = levels[depth]
        here = {n: v for n, (v, _, rest) in current.items() if rest and rest[0] == level}
        children = []
        for combo in combine(mode, {n: len(v) for n, v in here.items()}, level):  # type: ignore[arg-type]
            step = dict(current)
            for name, index in combo.items():
                value, _, rest = current[name]
                step[name] = (value.items[index], value.keys[index], rest[1:])
            children.append(walk(depth + 1, step))
        return children

    return elements, walk(0, inputs)


def assemble(tree: Tree, levels: tuple[str, ...], leaf: Any) -> ListValue:
    """The list value of one output: `leaf(index)` gives (value, key) of an element's output."""
    def build(node: Any, depth: int) -> tuple[Any, bytes]:
        if not isinstance(node, list):
            return leaf(node)
        built = [build(child, depth + 1) for child in node]
        value = ListValue(tuple(v for v, _ in built), tuple(k for _, k in built), levels[depth])  # type: ignore[arg-type]
        return value, collection_key(value.keys)
    return build(tree, 0)[0]


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dim") and hasattr(value, "split")


def batch_group_key(kwargs: dict[str, Any], parts: dict[str, bytes], batched: Sequence[str]) -> Any:
    """What elements must share to run as one call: every input but the batched ones (by key), and the
    shape, dtype and device of the batched tensors. None when this element cannot join a batch: a batched
    input that is not a tensor, or a value that says `samples_independent = False`."""
    tensors = [kwargs.get(name) for name in batched]
    if not all(_is_tensor(t) for t in tensors):
        return None
    if any(getattr(value, "samples_independent", True) is False for name, value in kwargs.items()
           if name not in batched):
        return None
    shared = tuple(sorted((name, key) for name, key in parts.items() if name not in batched))
    return shared, tuple((tuple(t.shape), str(t.dtype), str(t.device)) for t in tensors)  # type: ignore[union-attr]


def concat(values: Sequence[Any], dim: int) -> Any:
    import torch

    return torch.cat(list(values), dim=dim)


def split(value: Any, sizes: Sequence[int], dim: int) -> list[Any]:
    """`value` cut along `dim` into pieces of `sizes` (each its own contiguous tensor)."""
    if not _is_tensor(value) or value.dim() <= dim or value.shape[dim] != sum(sizes):
        shape = tuple(value.shape) if _is_tensor(value) else type(value).__name__
        raise ValueError(f"a batched output must have {sum(sizes)} rows on axis {dim}, got {shape}")
    return [piece.contiguous() for piece in value.split(list(sizes), dim=dim)]


# Sweeps ----------------------------------------------------------------------------------------------

SWEEP_NODE = "core/sweep"
"""The node type a sweep inserts (the built-in library's; its one input is `values`, its output `values`)."""


def sweep(workflow: Any, axes: Sequence[tuple[str, Sequence[Any]]]) -> tuple[Any, list[str]]:
    """`workflow` with each `NODE.INPUT` of `axes` fed by a sweep of its values, and a label per element.

    Several axes give every combination (the first axis outermost): each axis's sweep holds its column of
    the combinations, so the sweeps zip element by element wherever they meet. The graph then runs once:
    elements share the cache (a branch only one axis reaches runs once per value of that axis) and a
    solver fed only different noises solves them as one batch."""
    addresses = [address for address, _ in axes]
    repeated = sorted({a for a in addresses if addresses.count(a) > 1})
    if repeated:
        raise KeyError(f"{repeated[0]!r} is swept twice")
    combos = list(itertools.product(*(list(values) for _, values in axes)))
    swept = workflow.copy_deep()
    for column, (address, _) in enumerate(axes):
        node_id, sep, input_name = address.rpartition(".")
        if not sep or not node_id or not input_name:
            raise KeyError(f"{address!r}: expected NODE.INPUT")
        if node_id not in swept.nodes:
            raise KeyError(f"{address!r}: no node {node_id!r} in this workflow")
        sweep_id = f"sweep_{node_id}_{input_name}"
        while sweep_id in swept.nodes:
            sweep_id += "_"
        swept.nodes[sweep_id] = type(swept.nodes[node_id])(type=SWEEP_NODE,
                                                           inputs={"values": [combo[column] for combo in combos]})
        swept.set(address, {"from": sweep_id, "output": "values"})
    labels = [" ".join(f"{address}={value}" for address, value in zip(addresses, combo, strict=True))
              for combo in combos]
    return swept, labels


def variants(workflow: Any, axes: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[str, Any]]:
    """One workflow per combination of `axes` values (the first axis outermost), with its label: the
    sweep as separate runs, for executors that spread them over workers (`nodegraph.ray_executor`)."""
    addresses = [address for address, _ in axes]
    found = []
    for combo in itertools.product(*(list(values) for _, values in axes)):
        variant = workflow.copy_deep()
        for address, value in zip(addresses, combo, strict=True):
            variant.set(address, value)
        found.append((" ".join(f"{a}={v}" for a, v in zip(addresses, combo, strict=True)), variant))
    return found
