"""A second cache tier in host memory for what the device cache evicts.

On a GPU the cache budget is GPU memory. An entry pushed out of it that holds tensors or models on the
device is not dropped: it moves to the CPU and waits in a host LRU (its own byte budget); a later hit
there moves it back to the device, which is far faster than loading a checkpoint again. Entries with
nothing on the device, and entries evicted from the host tier, are dropped as before.

The policy is plain Python over three functions (does a value hold anything on a device, move a value
to a device, its size), so it is tested without a GPU by passing the device and the mover in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .cache import MISSING, LRUCache

Holds = Callable[[Any, str], bool]
Move = Callable[[Any, str], Any]


def holds_on(value: Any, device: str) -> bool:
    """True when `value` (node outputs: a dict of tensors, modules and objects holding modules) keeps a
    tensor on `device`'s type (cuda, mps...)."""
    kind = device.split(":")[0]
    return any(tensor.device.type == kind for tensor in _tensors(value, set()))


def move_to(value: Any, device: str) -> Any:
    """`value` with its modules moved in place and its tensors replaced, on `device`."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, torch.nn.Module):
        return value.to(device)
    if isinstance(value, dict):
        for key, item in value.items():
            value[key] = move_to(item, device)
        return value
    if isinstance(value, list):
        return [move_to(item, device) for item in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(move_to(item, device) for item in value)
    for name, item in list(getattr(value, "__dict__", {}).items()):  # fields, guidance objects, encoders
        if isinstance(item, (torch.Tensor, torch.nn.Module)):
            setattr(value, name, move_to(item, device))
    return value


def _tensors(value: Any, seen: set[int]) -> list[Any]:
    import torch

    if id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, torch.nn.Module):
        return [*value.parameters(), *value.buffers()]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item, seen)]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item, seen)]
    return [t for item in getattr(value, "__dict__", {}).values() for t in _tensors(item, seen)]


class OffloadingCache(LRUCache):
    """The device LRU (`budget_bytes`) backed by a host LRU (`host_bytes`) for evicted device values.

    `device` is where runs compute; `host` where evicted values wait ("cpu"). `holds` and `move` default
    to the torch implementations above; tests pass their own.
    """

    def __init__(self, budget_bytes: int, host_bytes: int, device: str, host: str = "cpu",
                 holds: Holds = holds_on, move: Move = move_to) -> None:
        super().__init__(budget_bytes, on_evict=self._offload)
        self.device, self.host_device = device, host
        self.host = LRUCache(host_bytes)
        self._holds, self._move = holds, move
        self.offloads = self.onloads = 0

    def _offload(self, key: bytes, value: Any) -> None:
        if self._holds(value, self.device):
            self.host.put(key, self._move(value, self.host_device))
            self.offloads += 1

    def get(self, key: bytes) -> Any:
        value = super().get(key)
        if value is not MISSING:
            return value
        parked = self.host.get(key)
        if parked is MISSING:
            return MISSING
        self.host.discard(key)
        self.onloads += 1
        self.misses, self.hits = self.misses - 1, self.hits + 1
        value = self._move(parked, self.device)
        self.put(key, value)
        return value

    def __contains__(self, key: bytes) -> bool:
        return super().__contains__(key) or key in self.host

    def clear(self) -> None:
        super().clear()
        self.host.clear()
