"""Output cache: Merkle key -> node outputs, least-recently-used eviction under a byte budget."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

MISSING = object()


def size_of(value: Any, _seen: set[int] | None = None) -> int:
    """Bytes held by a value: tensors and arrays by their storage, modules by parameters and buffers."""
    seen = _seen if _seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    custom = getattr(value, "__nodegraph_nbytes__", None)
    if callable(custom):
        return int(custom())
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch.Tensor
        return int(value.element_size() * value.numel())
    if hasattr(value, "nbytes") and isinstance(value.nbytes, int):  # numpy arrays
        return int(value.nbytes)
    if hasattr(value, "parameters") and hasattr(value, "buffers") and callable(value.parameters):
        return sum(size_of(t, seen) for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(size_of(v, seen) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sys.getsizeof(value) + sum(size_of(v, seen) for v in value)
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return sys.getsizeof(value) + sum(size_of(v, seen) for v in vars(value).values())
    return sys.getsizeof(value)


class LRUCache:
    """Keeps the most recently used entries whose sizes add up to at most `budget_bytes`.

    An entry larger than the whole budget is not kept (the run that made it still uses it).
    `on_evict(key, value)` lets an owner react, e.g. to offload a model before it is dropped.
    """

    def __init__(self, budget_bytes: int = 4 << 30, on_evict: Callable[[bytes, Any], None] | None = None) -> None:
        self.budget_bytes = int(budget_bytes)
        self.on_evict = on_evict
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
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

    def put(self, key: bytes, value: Any, nbytes: int | None = None) -> bool:
        size = size_of(value) if nbytes is None else int(nbytes)
        if key in self._entries:
            self.total_bytes -= self._entries.pop(key)[1]
        if size > self.budget_bytes:
            return False
        self._entries[key] = (value, size)
        self.total_bytes += size
        while self.total_bytes > self.budget_bytes:
            old_key, (old_value, old_size) = self._entries.popitem(last=False)
            self.total_bytes -= old_size
            self.evictions += 1
            if self.on_evict is not None:
                self.on_evict(old_key, old_value)
        return True

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0
