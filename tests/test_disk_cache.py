"""The disk cache: a new process reuses stored outputs (and skips the loaders above them), a damaged
entry is recomputed and rewritten, eviction drops the least recently used, only storable outputs of
pure nodes are stored, values round-trip exactly, and the store reads nothing but its own files."""

import importlib.metadata
import json
import math
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nodegraph import DiskCache, Session, default_disk_cache_dir
from nodegraph.cache import MISSING
from nodegraph.cli import main as cli_main
from nodegraph.disk_cache import code_fingerprint, disk_salt, unpack
from nodes.codecs import BUILTIN_CODECS
from nodes.conditioning import Condition

from . import engine_nodes
from .helpers import EventLog, link, wf

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "workflows" / "default.json"


def key(n: int) -> bytes:
    return n.to_bytes(16, "big")


def entry_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("v1/*/*.safetensors"))


def about(path: Path) -> dict:
    metadata, _ = unpack(path.read_bytes())
    return json.loads(metadata["nodegraph"])


def stored_by_type(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in entry_files(folder):
        found.setdefault(about(path)["type"], []).append(path)
    return found


# a new process ----------------------------------------------------------------------------------------

def cli_run(*args: str) -> list[dict]:
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", "run", *args, "--events", "json", "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def nodes_of(events: list[dict], kind: str) -> dict[str, dict]:
    return {e["node"]: e for e in events if e["kind"] == kind}


def test_a_second_process_reuses_the_text_encodings_and_noise_and_never_loads_the_encoder(tmp_path):
    cache = tmp_path / "cache"
    first = cli_run(str(DEFAULT), "--disk-cache", str(cache), "--out", str(tmp_path / "one"))
    assert "text_encoder" in nodes_of(first, "node_start")
    stored = stored_by_type(cache)
    assert len(stored["core/text_encode"]) == 2 and len(stored["core/noise"]) == 1
    assert set(stored) == {"core/seed", "core/uniform_grid", "core/noise", "core/text_encode", "core/ode_solve",
                           "core/vae_decode", "core/image_grid"}  # no models, field, path, guidance, nor the save
    assert {about(p)["node"] for p in stored["core/text_encode"]} == {"prompt", "null"}

    # Without the sampler's and later entries, the second process samples again from the stored
    # conditions and noise: the text encoder's loader is upstream of hits only, so it never runs.
    for kind in ("core/ode_solve", "core/vae_decode", "core/image_grid"):
        stored[kind][0].unlink()
    second = cli_run(str(DEFAULT), "--disk-cache", str(cache), "--out", str(tmp_path / "two"))
    cached = nodes_of(second, "node_cached")
    assert {n: e["info"]["source"] for n, e in cached.items()} == {"prompt": "disk", "null": "disk",
                                                                   "noise": "disk", "grid": "disk"}
    assert set(nodes_of(second, "node_start")) == {"model", "path", "field", "cfg", "solve", "vae", "decode",
                                                   "images", "save"}
    image = (tmp_path / "one" / "shapes_00001.png").read_bytes()
    assert (tmp_path / "two" / "shapes_00001.png").read_bytes() == image

    # Everything stored again: the third process loads the final grid and only saves it.
    third = cli_run(str(DEFAULT), "--disk-cache", str(cache), "--out", str(tmp_path / "three"))
    assert {n: e["info"]["source"] for n, e in nodes_of(third, "node_cached").items()} == {"images": "disk"}
    assert set(nodes_of(third, "node_start")) == {"save"}
    assert (tmp_path / "three" / "shapes_00001.png").read_bytes() == image


# in one process: sessions sharing a folder ---------------------------------------------------------

def test_a_disk_hit_stops_the_walk_and_later_hits_come_from_memory(registry, tmp_path):
    workflow = wf({"a": {"type": "test/number", "inputs": {"value": 2.5}},
                   "b": {"type": "test/add", "inputs": {"a": link("a", "float"), "b": 1.0}},
                   "out": {"type": "test/sink", "inputs": {"value": link("b", "float")}}})
    Session(registry, device="cpu", disk_cache=tmp_path).run(workflow)
    before = engine_nodes.CALLS.copy()
    session, log = Session(registry, device="cpu", disk_cache=tmp_path), EventLog()
    assert session.run(workflow, on_event=log).value("out") == 3.5
    assert engine_nodes.CALLS == before  # nothing ran: `out` itself came from disk
    assert [(e.node, e.info) for e in log if e.kind == "node_cached"] == [("out", {"source": "disk"})]
    log.clear()
    session.run(workflow, on_event=log)
    assert [(e.node, e.info) for e in log if e.kind == "node_cached"] == [("out", {"source": "memory"})]


def noise_workflow(seed: int = 5):
    return wf({"noise": {"type": "core/noise", "inputs": {"shape": [2, 3, 4], "seed": seed}}})


def flip_in_data(blob: bytes) -> bytes:
    return blob[:-5] + bytes([blob[-5] ^ 0x01]) + blob[-4:]


def flip_in_metadata(blob: bytes) -> bytes:
    at = blob.index(b"core/noise")
    return blob[:at] + b"core/noisE" + blob[at + 10:]


DAMAGE = {
    "a flipped bit in the numbers": flip_in_data,
    "a changed character in the metadata": flip_in_metadata,
    "truncated": lambda blob: blob[: len(blob) // 2],
    "truncated by one byte": lambda blob: blob[:-1],
    "empty": lambda blob: b"",
    "a header length past the end": lambda blob: (1 << 40).to_bytes(8, "little") + blob[8:],
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_recomputed_and_rewritten(builtin_registry, tmp_path, damage):
    cache = tmp_path / "cache"
    first = Session(builtin_registry, device="cpu", disk_cache=cache).run(noise_workflow(), outputs=["noise"])
    [path] = entry_files(cache)
    damaged = DAMAGE[damage](path.read_bytes())
    path.write_bytes(damaged)

    session, log = Session(builtin_registry, device="cpu", disk_cache=cache), EventLog()
    again = session.run(noise_workflow(), outputs=["noise"], on_event=log)
    assert log.nodes("node_start") == ["noise"] and log.nodes("node_cached") == []
    assert session.disk_cache.corrupt == 1 and torch.equal(again.value("noise"), first.value("noise"))
    assert path.read_bytes() != damaged  # written anew

    log = EventLog()
    third = Session(builtin_registry, device="cpu", disk_cache=cache).run(noise_workflow(), outputs=["noise"],
                                                                         on_event=log)
    assert [(e.node, e.info) for e in log if e.kind == "node_cached"] == [("noise", {"source": "disk"})]
    assert torch.equal(third.value("noise"), first.value("noise"))


def test_outputs_without_a_codec_and_side_effect_nodes_are_not_stored(builtin_registry, tmp_path):
    workflow = wf({
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "noise": {"type": "core/noise", "inputs": {"shape": [1, 3, 8, 8], "seed": 1}},
        "image": {"type": "core/to_image", "inputs": {"tensor": link("noise", "latent"), "mode": "minmax"}},
        "save": {"type": "core/save_image", "inputs": {"images": link("image", "image"), "prefix": "x"}},
    })
    session = Session(builtin_registry, device="cpu", output_dir=tmp_path / "out", disk_cache=tmp_path / "cache")
    session.run(workflow, outputs=["path", "save"])
    assert {about(p)["node"] for p in entry_files(tmp_path / "cache")} == {"noise", "image"}
    assert session.disk_cache.unstorable == 1  # the path; the save (a side effect, list of str) is not even tried

    log = EventLog()
    Session(builtin_registry, device="cpu", output_dir=tmp_path / "out", disk_cache=tmp_path / "cache").run(
        workflow, outputs=["path", "save"], on_event=log)
    assert sorted(log.nodes("node_start")) == ["path", "save"] and log.nodes("node_cached") == ["image"]


def test_a_node_is_stored_only_when_every_output_is_storable(tmp_path):
    cache = DiskCache(tmp_path)
    assert not cache.store(key(1), {"number": 1, "thing": object()})
    assert not cache.store(key(2), {"nested": [1, {"deep": {3, 4}}]})  # a set has no codec
    assert not cache.store(key(3), {"tensor": torch.zeros(2)})  # no tensor codec given to this store
    assert not cache.store(key(4), {"parameter": torch.nn.Parameter(torch.zeros(2))})
    assert entry_files(tmp_path) == [] and cache.unstorable == 4


# values -------------------------------------------------------------------------------------------

def test_a_condition_round_trips_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    condition = Condition(
        labels=torch.tensor([1, 0, 9]),
        tokens=torch.randn(1, 5, 8, generator=generator).expand(3, 5, 8),  # a broadcast view
        mask=torch.rand(3, 5, generator=generator) > 0.5,
        pooled=torch.randn(3, 8, generator=generator).to(torch.bfloat16),
        prompts=("a red circle", "", "ünïcødé ☃\nsecond line"),
        extras={"time_ids": torch.arange(18.0).view(3, 6), "guidance": torch.full((3,), 3.5, dtype=torch.float16)},
    )
    assert DiskCache(tmp_path, codecs=BUILTIN_CODECS).store(key(7), {"conditioning": condition, "null": Condition()})
    back = DiskCache(tmp_path, codecs=BUILTIN_CODECS).load(key(7), "cpu")
    assert type(back["conditioning"]) is Condition and back["null"] == Condition()
    restored = back["conditioning"]
    for name in ("labels", "tokens", "mask", "pooled"):
        ours, theirs = getattr(restored, name), getattr(condition, name)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and torch.equal(ours, theirs), name
    assert restored.prompts == condition.prompts and type(restored.prompts) is tuple
    assert list(restored.extras) == ["time_ids", "guidance"]
    assert all(torch.equal(restored.extras[n], condition.extras[n])
               and restored.extras[n].dtype == condition.extras[n].dtype for n in condition.extras)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    as_bytes = lambda t: t.contiguous().reshape(-1).view(torch.uint8)  # noqa: E731
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(as_bytes(a), as_bytes(b))


def test_tensors_and_plain_values_round_trip_bit_for_bit(tmp_path):
    special = torch.tensor([0.0, -0.0, math.inf, -math.inf, 1e-45, 3.4e38])
    nan_payload = torch.tensor([0x7FC00001, 0x7F800001, -1], dtype=torch.int32).view(torch.float32)
    tensors = {
        "special": special, "nan payloads": nan_payload, "f64": torch.randn(3, 2, dtype=torch.float64),
        "bf16": torch.randn(4).to(torch.bfloat16), "f16": torch.randn(4).half(), "int8": torch.tensor([-128, 127]),
        "uint8": torch.arange(256, dtype=torch.uint8), "i64": torch.tensor([-(2**63), 2**63 - 1]),
        "bool": torch.tensor([True, False]), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
        "transposed": torch.arange(12.0).view(3, 4).t(), "f8": torch.randn(5).to(torch.float8_e4m3fn),
    }
    plain = {"int": 2**80, "float": 0.1, "nan": math.nan, "-inf": -math.inf, "-0.0": -0.0, "str": "x\x00y",
             "none": None, "bool": True, "list": [1, [2.0, "3"]], "tuple": (1, (2,)), "dict": {1: "a", "b": (None,)}}
    grad = torch.ones(2, requires_grad=True)
    cache = DiskCache(tmp_path, codecs=BUILTIN_CODECS)
    assert cache.store(key(1), {**tensors, "plain": plain, "grad": grad})
    back = DiskCache(tmp_path, codecs=BUILTIN_CODECS).load(key(1), "cpu")
    for name, tensor in tensors.items():
        assert same_bits(back[name], tensor) and back[name].is_contiguous(), name
    assert back["grad"].requires_grad and not back["special"].requires_grad
    restored = back["plain"]
    assert math.isnan(restored.pop("nan")) and math.isnan(plain.pop("nan"))
    assert restored == plain and math.copysign(1, restored["-0.0"]) == -1
    assert type(restored["tuple"]) is tuple and type(restored["tuple"][1]) is tuple and type(restored["int"]) is int


def test_entries_are_safetensors_files_any_reader_opens(tmp_path):
    from safetensors import safe_open

    tensor = torch.randn(2, 3)
    DiskCache(tmp_path, codecs=BUILTIN_CODECS).store(key(3), {"x": tensor, "n": 4}, {"node": "x", "type": "t/x"})
    [path] = entry_files(tmp_path)
    with safe_open(str(path), "pt") as handle:
        assert torch.equal(handle.get_tensor("0"), tensor)
        entry = json.loads(handle.metadata()["nodegraph"])
    assert entry["key"] == key(3).hex() and entry["node"] == "x" and entry["outputs"]["n"] == 4
    assert entry["arrays"]["0"]["dtype"] == "F32" and entry["arrays"]["0"]["shape"] == [2, 3]
    assert path.stat().st_mode & 0o777 == 0o600 and (tmp_path / "CACHEDIR.TAG").read_text().startswith("Signature")


# eviction ----------------------------------------------------------------------------------------

def names(cache: DiskCache) -> set[int]:
    return {int(p.stem, 16) for p in entry_files(cache.root)}


def test_eviction_drops_the_least_recently_used_until_under_the_limit(tmp_path):
    value = {"text": "x" * 2000}
    size = DiskCache(tmp_path / "probe").encode(key(0), value).size
    cache = DiskCache(tmp_path / "c", limit_bytes=3 * size + 64)  # room for three entries, not four
    other = DiskCache(tmp_path / "c", limit_bytes=3 * size + 64)  # another process on the same folder
    cache.rescan_seconds = other.rescan_seconds = 0  # both write all the time: each write rescans
    cache.store(key(1), value)
    other.store(key(2), value)
    cache.store(key(3), value)
    assert names(cache) == {1, 2, 3} and cache.evictions == 0
    assert cache.load(key(1)) == value  # used: now the most recent
    other.store(key(4), value)
    assert names(cache) == {1, 3, 4}  # 2 was the least recently used
    assert other.load(key(3)) == value
    cache.store(key(5), value)
    assert names(cache) == {3, 4, 5} and cache.evictions + other.evictions == 2
    assert cache.total_bytes <= cache.limit_bytes
    assert not cache.store(key(6), {"text": "x" * (4 * size)})  # larger than the whole limit: not stored
    assert names(cache) == {3, 4, 5}


def test_one_process_evicts_from_its_running_tally_without_rescanning(tmp_path):
    value = {"text": "x" * 2000}
    size = DiskCache(tmp_path / "probe").encode(key(0), value).size
    cache = DiskCache(tmp_path / "c", limit_bytes=2 * size + 64)
    cache.rescan_seconds = math.inf
    for n in range(1, 6):
        cache.store(key(n), value)
    assert names(cache) == {4, 5} and cache.evictions == 3


def test_the_store_only_ever_deletes_its_own_entries(tmp_path):
    cache = DiskCache(tmp_path, limit_bytes=1 << 20)
    cache.store(key(1), {"v": 1})
    cache.store(key(2), {"v": 2})
    first, second = entry_files(tmp_path)
    foreign = [tmp_path / "notes.txt", first.parent / "notes.txt", tmp_path / f"{key(9).hex()}.safetensors",
               first.parent / f"{key(8).hex()}.safetensors.bak", tmp_path / "v1" / "zz" / first.name]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    cache.limit_bytes = second.stat().st_size
    assert cache.evict() == [first]  # the older one
    cache.clear()
    assert not first.exists() and not second.exists() and all(p.read_text() == "mine" for p in foreign)


# nothing but its own files --------------------------------------------------------------------------

class Planted:
    """Unpickling this would create `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_the_store_refuses_anything_but_its_own_files_and_unpickles_nothing(tmp_path):
    from safetensors.torch import save_file

    marker = tmp_path / "unpickled"
    cache = DiskCache(tmp_path / "cache", codecs=BUILTIN_CODECS)
    cache.store(key(1), {"x": torch.ones(2)})
    good = cache.path(key(1))
    planted = {
        key(2): pickle.dumps(Planted(marker)),
        key(3): None,  # torch.save: a zip of pickles
        key(4): None,  # a valid safetensors file, not ours
        key(5): None,  # a symbolic link to a valid entry of another key
        key(6): good.read_bytes(),  # a valid entry copied under another key
    }
    for planted_key, blob in planted.items():
        path = cache.path(planted_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if blob is not None:
            path.write_bytes(blob)
    torch.save({"x": Planted(marker)}, cache.path(key(3)))
    save_file({"x": torch.ones(2)}, str(cache.path(key(4))), metadata={"nodegraph": "{}", "checksum": "0"})
    cache.path(key(5)).symlink_to(good)
    assert not marker.exists()  # torch.save pickled it, nothing loaded it
    for planted_key in planted:
        assert cache.load(planted_key) is MISSING, planted_key
        assert not cache.path(planted_key).exists()  # removed, so the node's own entry can be written there
    assert not marker.exists() and cache.corrupt == len(planted)
    assert torch.equal(cache.load(key(1))["x"], torch.ones(2))  # the link's target is untouched


def test_an_entry_this_process_cannot_decode_is_a_miss_and_stays(tmp_path):
    DiskCache(tmp_path, codecs=BUILTIN_CODECS).store(key(1), {"x": torch.ones(2)})
    without = DiskCache(tmp_path)  # a process without the plugin that registered the codec
    assert without.load(key(1)) is MISSING and without.corrupt == 0
    assert torch.equal(DiskCache(tmp_path, codecs=BUILTIN_CODECS).load(key(1))["x"], torch.ones(2))


def test_concurrent_writers_of_one_key_never_expose_a_partial_entry(tmp_path):
    value = {"x": torch.arange(1 << 20, dtype=torch.float32)}
    stop = threading.Event()
    seen = {"hits": 0, "bad": 0}

    def write(cache: DiskCache) -> None:
        for _ in range(15):
            assert cache.store(key(1), value)

    def read() -> None:
        reader = DiskCache(tmp_path, codecs=BUILTIN_CODECS)
        while not stop.is_set():
            got = reader.load(key(1))
            if got is not MISSING:
                seen["hits"] += 1
                seen["bad"] += not torch.equal(got["x"], value["x"])
        seen["corrupt"] = reader.corrupt

    writers = [threading.Thread(target=write, args=(DiskCache(tmp_path, codecs=BUILTIN_CODECS),)) for _ in range(2)]
    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    for thread in readers:
        thread.join()
    assert seen["hits"] > 0 and seen["bad"] == 0 and seen["corrupt"] == 0
    assert [p.name for p in tmp_path.glob("v1/*/*")] == [f"{key(1).hex()}.safetensors"]  # no temporary left


# keys, settings, failures ----------------------------------------------------------------------------

def test_the_disk_key_names_the_device_type_the_dtype_and_the_code(tmp_path, monkeypatch):
    modules = ["nodegraph", "nodes.solve_nodes"]
    cpu = disk_salt("cpu", "float32", modules)
    assert cpu == disk_salt("cpu", "float32", modules)
    assert cpu != disk_salt("cuda", "float32", modules) and cpu != disk_salt("cpu", "bfloat16", modules)
    assert disk_salt("cuda:0", "float32", modules) == disk_salt("cuda:1", "float32", modules)
    real_version = importlib.metadata.version
    with monkeypatch.context() as patch:
        patch.setattr(importlib.metadata, "version", lambda name: "99.0" if name == "torch" else real_version(name))
        assert disk_salt("cpu", "float32", modules) != cpu  # another torch may compute other numbers

    package = tmp_path / "fp_plugin"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "nodes.py").write_text("VALUE = 1\n")
    (package / "helpers.py").write_text("def helper():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("fp_plugin.sub.nodes")
    before = code_fingerprint(["fp_plugin.sub.nodes"])
    assert before == code_fingerprint(["fp_plugin.sub.nodes", "fp_plugin"])  # one package, hashed once
    (package / "helpers.py").write_text("def helper():\n    return 2\n")  # not the node's module: still its code
    assert code_fingerprint(["fp_plugin.sub.nodes"]) != before


def test_default_folder_and_the_cli_switches(registry, tmp_path, monkeypatch):
    monkeypatch.delenv("NODEGRAPH_DISK_CACHE", raising=False)
    monkeypatch.delenv("NODEGRAPH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_disk_cache_dir() == tmp_path / "xdg" / "nodegraph"
    monkeypatch.setenv("NODEGRAPH_DATA_DIR", str(tmp_path / "data"))
    assert default_disk_cache_dir() == tmp_path / "data" / "cache"
    monkeypatch.setenv("NODEGRAPH_DISK_CACHE", "off")
    assert default_disk_cache_dir() is None
    monkeypatch.setenv("NODEGRAPH_DISK_CACHE", str(tmp_path / "chosen"))
    assert default_disk_cache_dir() == tmp_path / "chosen"
    assert Session(registry, device="cpu").disk_cache is None  # Python sessions: only when asked
    assert Session(registry, device="cpu", disk_cache=True).disk_cache.root == tmp_path / "chosen"

    monkeypatch.delenv("NODEGRAPH_DISK_CACHE")
    demo = str(ROOT / "workflows" / "demo_clouds.json")
    assert cli_main(["run", demo, "--out", str(tmp_path / "out"), "--events", "none"]) == 0
    assert {about(p)["node"] for p in entry_files(tmp_path / "data" / "cache")} >= {"noise", "smooth", "grid"}
    monkeypatch.setenv("NODEGRAPH_DATA_DIR", str(tmp_path / "other"))
    assert cli_main(["run", demo, "--out", str(tmp_path / "out"), "--events", "none", "--no-disk-cache"]) == 0
    assert not (tmp_path / "other").exists()
    assert cli_main(["run", demo, "--out", str(tmp_path / "out"), "--events", "none",
                     "--disk-cache", str(tmp_path / "flag"), "--disk-cache-mb", "1"]) == 0
    assert 0 < DiskCache(tmp_path / "flag").total_bytes <= 1 << 20


def test_an_unwritable_cache_is_one_warning_and_the_run_goes_on(builtin_registry, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    workflow = wf({"a": {"type": "core/noise", "inputs": {"shape": [2], "seed": 1}},
                   "b": {"type": "core/noise", "inputs": {"shape": [3], "seed": 2}}})
    session, log = Session(builtin_registry, device="cpu", disk_cache=blocker / "cache"), EventLog()
    result = session.run(workflow, outputs=["a", "b"], on_event=log)
    assert result.value("b").shape == (3,)
    warnings = [e.message for e in log if e.kind == "warning"]
    assert len(warnings) == 1 and "disk cache" in warnings[0] and "not written" in warnings[0]


def test_the_engine_still_imports_without_torch():
    code = "import sys, nodegraph, nodegraph.disk_cache, nodegraph.codecs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_disk_hit_lands_on_the_device_under_its_own_key(builtin_registry, tmp_path):
    cache = tmp_path / "cache"
    gpu = Session(builtin_registry, device="cuda", disk_cache=cache).run(noise_workflow(), outputs=["noise"])
    cpu = Session(builtin_registry, device="cpu", disk_cache=cache).run(noise_workflow(), outputs=["noise"])
    assert len(entry_files(cache)) == 2  # CUDA and CPU draw different numbers: two keys
    log = EventLog()
    again = Session(builtin_registry, device="cuda", disk_cache=cache).run(noise_workflow(), outputs=["noise"],
                                                                          on_event=log)
    assert log.nodes("node_cached") == ["noise"] and again.value("noise").device.type == "cuda"
    assert torch.equal(again.value("noise"), gpu.value("noise")) and cpu.value("noise").device.type == "cpu"
