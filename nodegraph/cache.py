"""Output cache: Merkle key -> node outputs, least-recently-used eviction under a byte budget.

Memory is charged per tensor *storage*, once across all entries: a model held by its loader's
entry and again inside a field or guidance object built on it costs its weights once, and its
bytes are released only when the last entry holding that storage is evicted.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MISSING = object()


@dataclass
class Footprint:
    """What a value holds: tensor storages by identity (with their bytes) and other bytes."""

    storages: dict[tuple[str, int], int] = field(default_factory=dict)
    other_bytes: int = 0

    @property
    def total(self) -> int:
        return self.other_bytes + sum(self.storages.values())


def _storage_key(tensor: Any) -> tuple[tuple[str, int], int] | None:
    try:
        storage = tensor.untyped_storage()
        return (str(tensor.device), storage.data_ptr() or id(storage)), int(storage.nbytes())
    except (AttributeError, RuntimeError, TypeError):
        return None


def footprint(value: Any, into: Footprint | None = None, _seen: set[int] | None = None) -> Footprint:
    """Walk a value: tensors by storage, modules by parameters and buffers, containers and objects."""
    result = into if into is not None else Footprint()
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return result
    seen.add(id(value))
    custom = getattr(value, "__nodegraph_nbytes__", None)
    if callable(custom):
        result.other_bytes += int(custom())
    elif hasattr(value, "element_size") and hasattr(value, "numel"):  # torch.Tensor
        keyed = _storage_key(value)
        if keyed is None:
            result.other_bytes += int(value.element_size() * value.numel())
        else:
            result.storages[keyed[0]] = keyed[1]
    elif hasattr(value, "nbytes") and isinstance(value.nbytes, int):  # numpy arrays
        result.other_bytes += int(value.nbytes)
    elif hasattr(value, "parameters") and hasattr(value, "buffers") and callable(value.parameters):
        for tensor in (*value.parameters(), *value.buffers()):
            footprint(tensor, result, seen)
    elif isinstance(value, dict):
        result.other_bytes += sys.getsizeof(value)
        for item in value.values():
            footprint(item, result, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        result.other_bytes += sys.getsizeof(value)
        for item in value:
            footprint(item, result, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        result.other_bytes += sys.getsizeof(value)
        for item in vars(value).values():
            footprint(item, result, seen)
    else:
        result.other_bytes += sys.getsizeof(value)
    return result


def size_of(value: Any) -> int:
    """Bytes held by a value (each tensor storage counted once)."""
    return footprint(value).total


class LRUCache:
    """Keeps the most recently used entries whose memory adds up to at most `budget_bytes`.

    An entry larger than the whole budget is not kept (the run that made it still uses it).
    `on_evict(key, value)` lets an owner react, e.g. to offload a model before it is dropped.
    """

    def __init__(self, budget_bytes: int = 4 << 30, on_evict: Callable[[bytes, Any], None] | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.on_evict = on_evict
        self._entries: OrderedDict[bytes, tuple[Any, Footprint]] = OrderedDict()
        self._storage_refs: dict[tuple[str, int], int] = {}
        self._storage_bytes: dict[tuple[str, int], int] = {}
        self.total_bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def get(self, key: bytes) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return MISSING
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    def discard(self, key: bytes) -> None:
        """Forget an entry (its memory released) without calling `on_evict`."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._release(entry[1])

    def touch(self, key: bytes) -> None:
        """Mark an entry as recently used without counting a hit (an upstream of a hit)."""
        if key in self._entries:
            self._entries.move_to_end(key)

    def _charge(self, foot: Footprint) -> None:
        self.total_bytes += foot.other_bytes
        for storage, nbytes in foot.storages.items():
            count = self._storage_refs.get(storage, 0)
            if count == 0:
                self._storage_bytes[storage] = nbytes
                self.total_bytes += nbytes
            self._storage_refs[storage] = count + 1

    def _release(self, foot: Footprint) -> None:
        self.total_bytes -= foot.other_bytes
        for storage in foot.storages:
            count = self._storage_refs[storage] - 1
            if count == 0:
                del self._storage_refs[storage]
                self.total_bytes -= self._storage_bytes.pop(storage)
            else:
                self._storage_refs[storage] = count

    def put(self, key: bytes, value: Any, nbytes: int | None = None) -> bool:
        foot = footprint(value) if nbytes is None else Footprint(other_bytes=int(nbytes))
        if key in self._entries:
            self._release(self._entries.pop(key)[1])
        new_bytes = foot.other_bytes + sum(b for s, b in foot.storages.items() if s not in self._storage_refs)
        if new_bytes > self.budget_bytes:
            return False
        self._entries[key] = (value, foot)
        self._charge(foot)
        while self.total_bytes > self.budget_bytes and len(self._entries) > 1:
            old_key, (old_value, old_foot) = self._entries.popitem(last=False)
            self._release(old_foot)
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)
        return True

    def clear(self) -> None:
        self._entries.clear()
        self._storage_refs.clear()
        self._storage_bytes.clear()
        self.total_bytes = 0
