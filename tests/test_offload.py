"""The device cache's host tier: what the device budget evicts moves to the host and comes back on a
hit; values with nothing on the device are dropped. The device is a parameter, so no GPU is needed."""

from __future__ import annotations

import torch

from nodegraph.cache import MISSING
from nodegraph.offload import OffloadingCache, holds_on, move_to


class Model:
    """Stands for a loaded model: `where` it lives, `nbytes` it holds."""

    def __init__(self, name: str, where: str, nbytes: int) -> None:
        self.name, self.where, self.nbytes = name, where, nbytes
        self.moves: list[str] = []

    def __nodegraph_nbytes__(self) -> int:
        return self.nbytes


def holds(value, device: str) -> bool:
    return isinstance(value, Model) and value.where == device


def move(value, device: str):
    value.moves.append(device)
    value.where = device
    return value


def cache(device_bytes: int = 100, host_bytes: int = 250) -> OffloadingCache:
    return OffloadingCache(device_bytes, host_bytes, device="cuda:0", holds=holds, move=move)


def test_an_evicted_device_model_moves_to_the_host_before_it_is_dropped():
    c = cache()
    unet, vae = Model("unet", "cuda:0", 80), Model("vae", "cuda:0", 60)
    c.put(b"unet", unet)
    c.put(b"vae", vae)  # 140 > 100: the least recently used (unet) leaves the device
    assert unet.moves == ["cpu"] and unet.where == "cpu"
    assert b"unet" in c and c.offloads == 1 and c.total_bytes == 60
    assert c.get(b"unet") is unet  # a hit on the host tier brings it back to the device
    assert unet.moves == ["cpu", "cuda:0"] and unet.where == "cuda:0"
    assert vae.where == "cpu" and c.onloads == 1  # and pushed the other one out in turn


def test_values_with_nothing_on_the_device_are_simply_dropped():
    c = cache()
    host_only = Model("latents", "cpu", 80)
    c.put(b"a", host_only)
    c.put(b"b", Model("unet", "cuda:0", 60))
    assert host_only.moves == [] and b"a" not in c and c.get(b"a") is MISSING


def test_the_host_tier_has_its_own_budget():
    c = cache(device_bytes=100, host_bytes=100)
    models = [Model(f"m{i}", "cuda:0", 60) for i in range(4)]
    for i, model in enumerate(models):
        c.put(bytes([i]), model)
    # device: m3; host holds one 60-byte model at a time: m2 (m0, m1 were pushed out of the host)
    assert [bytes([i]) in c for i in range(4)] == [False, False, True, True]
    assert c.host.total_bytes == 60


def test_torch_values_are_found_and_moved_by_device_type():
    layer = torch.nn.Linear(2, 2)
    outputs = {"backbone": layer, "latent": torch.zeros(3), "name": "x"}
    assert holds_on(outputs, "cpu") and not holds_on(outputs, "cuda:0")
    moved = move_to(outputs, "meta")
    assert moved["latent"].device.type == "meta" and layer.weight.device.type == "meta" and moved["name"] == "x"


def test_a_session_on_an_accelerator_uses_the_host_tier(builtin_registry):
    from nodegraph import Session
    from nodegraph.cache import LRUCache

    assert type(Session(builtin_registry, device="cpu").cache) is LRUCache
    gpu = Session(builtin_registry, device="meta", cache_bytes=1 << 20, host_cache_bytes=2 << 20)
    assert isinstance(gpu.cache, OffloadingCache) and gpu.cache.host.budget_bytes == 2 << 20
