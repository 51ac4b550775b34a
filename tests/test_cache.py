import torch

from nodegraph import Session
from nodegraph.cache import LRUCache, size_of

from .helpers import EventLog, link, wf


def test_shared_storage_is_charged_once_and_released_with_its_last_holder():
    weights = torch.zeros(10_000)  # 40,000 bytes
    cache = LRUCache(budget_bytes=10**9)
    cache.put(b"model", weights)
    alone = cache.total_bytes
    cache.put(b"field", {"model": weights, "view": weights[:10]})
    assert alone >= 40_000 and cache.total_bytes - alone < 1_000  # the view shares the storage
    assert size_of({"a": weights, "b": weights}) < 41_000
    cache.put(b"model", torch.zeros(1))  # the loader's entry lets go: "field" still holds the weights
    assert cache.total_bytes >= 40_000
    cache.put(b"field", 0)  # the last holder lets go: the weights' bytes are released
    assert cache.total_bytes < 1_000
    cache.budget_bytes = 500
    cache.put(b"big", torch.zeros(1_000))  # larger than the budget: not kept
    assert b"big" not in cache


def test_module_parameters_count_their_storage():
    layer = torch.nn.Linear(100, 10)
    assert size_of(layer) == (100 * 10 + 10) * 4
    assert size_of((layer, layer.weight)) < size_of(layer) + 100  # the weight is inside the layer


def test_entries_upstream_of_a_hit_stay_recent(registry):
    session = Session(registry, cache_bytes=10**9)
    w = wf({"model": {"type": "test/tensor", "inputs": {"numel": 1000}},
            "field": {"type": "test/hold", "inputs": {"value": link("model", "tensor")}},
            "old": {"type": "test/tensor", "inputs": {"numel": 1000, "tag": 1}}})
    session.run(w, outputs=["old"])
    session.run(w, outputs=["field"])
    session.run(w, outputs=["field"])  # a hit on field: model is touched, "old" becomes the oldest
    keep = session.cache.total_bytes
    session.cache.budget_bytes = keep + 3_000  # room for one more 4,000-byte tensor only after an eviction
    w.nodes["new"] = wf({"new": {"type": "test/tensor", "inputs": {"numel": 1000, "tag": 2}}}).nodes["new"]
    session.run(w, outputs=["new"])
    log = EventLog()
    session.run(w, outputs=["old", "model"], on_event=log)
    assert log.nodes("node_cached") == ["model"] and log.nodes("node_start") == ["old"]
