"""Ray: workflows and sweep elements on two local Ray workers, each holding a Session.

One local Ray runtime and one two-worker executor for the whole module (starting them takes most of
its time). A worker is killed mid-job through a signal actor: the node tells it that it started and
then waits on it, so the test knows the node is running without sleeping.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import ray  # a dev dependency: these tests never skip
import torch
from PIL import Image

from nodegraph import Session, Workflow
from nodegraph.cli import main as cli_main
from nodegraph.jobs import JobQueue, JobStore
from nodegraph.ray_executor import RayExecutor, WorkerSpec

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "workflows" / "demo_clouds.json"

SIGNAL_PLUGIN = textwrap.dedent('''
    import os

    from nodegraph import hookimpl, node


    @node("raytest/hold_once", category="test")
    def hold_once(value: float = 1.0) -> float:
        """The first call anywhere tells the signal actor its pid and waits for ever (its worker is
        killed meanwhile); later calls return 2 * value."""
        import ray

        signal = ray.get_actor("nodegraph-test-signal")
        if ray.get(signal.arrive.remote(os.getpid())):
            ray.get(signal.never.remote())
        return 2 * value


    @hookimpl
    def nodegraph_register_nodes(registry):
        registry.add_node(hold_once)
''')


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """A local Ray runtime (4 CPUs: the module executor's 2 workers + the CLI's 2) and the plugin folder."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "raytest.py").write_text(SIGNAL_PLUGIN)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=256 << 20, log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Signal:
        def __init__(self):
            import asyncio

            self.arrived, self.pids, self.forever = asyncio.Event(), [], asyncio.Event()

        async def arrive(self, pid: int) -> bool:
            self.pids.append(pid)
            self.arrived.set()
            return len(self.pids) == 1

        async def wait_arrived(self) -> int:
            await self.arrived.wait()
            return self.pids[0]

        async def never(self) -> None:
            await self.forever.wait()

    signal = Signal.options(name="nodegraph-test-signal", max_concurrency=16).remote()
    yield plugins, signal
    ray.shutdown()


@pytest.fixture(scope="module")
def executor(runtime, tmp_path_factory, sd15_folder):
    plugins, _ = runtime
    out = tmp_path_factory.mktemp("ray-out")
    spec = WorkerSpec(device="cpu", output_dir=str(out), read_roots=(str(ROOT), str(sd15_folder.parent)),
                      plugin_dirs=(str(plugins),))
    running = RayExecutor(spec, workers=2, local_session=spec.session())
    yield running
    running.close()


def seeds(*values: int) -> list[Workflow]:
    return [Workflow.load(DEMO).set("seed.seed", seed) for seed in values]


def test_a_sweep_on_two_workers_equals_in_process_runs_bit_for_bit(executor):
    variants = seeds(1, 2, 3, 4)
    results = executor.map(variants, outputs=["image"])
    assert {worker for _, worker in results} == {"worker-0", "worker-1"}  # spread over both
    local = Session(device="cpu")
    for variant, (result, _) in zip(variants, results, strict=True):
        assert torch.equal(result.value("image"), local.run(variant, outputs=["image"]).value("image"))


def test_a_second_run_goes_to_the_worker_that_already_holds_its_files(executor, sd15_folder):
    """Affinity: the worker that loaded a model folder gets the next workflow reading it, and finds the
    model in its cache."""
    workflow = Workflow.load(ROOT / "workflows" / "sd15_text_to_image.json")
    workflow.set("model.path", str(sd15_folder)).set("noise.width", 16).set("noise.height", 16).set("grid.steps", 2)
    first, worker = executor.run(workflow, outputs=["solve"])
    assert "model" in first.ran
    for seed in (98, 99):
        again, same = executor.run(workflow.copy_deep().set("seed.seed", seed), outputs=["solve"])
        assert same == worker and "model" in again.cached and "solve" in again.ran


def test_a_worker_killed_mid_job_has_its_job_run_again_on_another(runtime, executor):
    _, signal = runtime
    workflow = Workflow.from_dict({"format": "nodegraph/workflow", "version": 1, "name": "held", "nodes": {
        "hold": {"type": "raytest/hold_once", "inputs": {"value": 21.0}}}})
    before = {w.name for w in executor.workers}
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(executor.run, workflow)
        pid = ray.get(signal.wait_arrived.remote(), timeout=300)  # the node runs in this worker process
        (doomed,) = [w for w in executor.workers if w.pid == pid]
        ray.kill(doomed.actor)
        result, worker = running.result(timeout=300)
    assert result.value("hold") == 42.0  # run again, to the end, elsewhere
    assert worker != doomed.name and doomed.name not in {w.name for w in executor.workers}
    assert len(executor.workers) == 2 and len(before & {w.name for w in executor.workers}) == 1  # replaced


def test_jobs_run_on_ray_workers_and_record_which(executor, tmp_path):
    store = JobStore(tmp_path / "data")
    queue = JobQueue(executor.session, store, executor=executor, workers=2).start()
    try:
        jobs = [queue.submit(variant)[0] for variant in seeds(5, 6)]
        finished = [queue.wait(job.id, timeout=300) for job in jobs]
        assert [job.status for job in finished] == ["done", "done"]
        assert {job.worker for job in finished} <= {w.name for w in executor.workers} and finished[0].worker
    finally:
        queue.stop()
        store.close()
    local_store = JobStore(tmp_path / "local")
    local = JobQueue(Session(device="cpu", output_dir=tmp_path / "out"), local_store).start()
    try:
        job, _ = local.submit(seeds(5)[0])
        assert local.wait(job.id, timeout=300).worker == "local"
    finally:
        local.stop()
        local_store.close()


def test_the_cli_runs_a_sweep_on_ray_with_the_pixels_of_separate_runs(runtime, tmp_path, capsys):
    for seed in (1, 2):
        assert cli_main(["run", str(DEMO), "--out", str(tmp_path / "local"), "--set", f"seed.seed={seed}",
                         "--events", "none"]) == 0
    capsys.readouterr()
    assert cli_main(["run", str(DEMO), "--out", str(tmp_path / "ray"), "--executor", "ray", "--workers", "2",
                     "--sweep", "seed.seed=1,2", "--events", "none"]) == 0
    err = capsys.readouterr().err
    assert "on Ray: 2 workers, 2 run(s)" in err and "seed.seed=1 (repeat 1) on worker-" in err
    local, remote = sorted((tmp_path / "local").glob("*.png")), sorted((tmp_path / "ray").glob("*.png"))
    assert len(local) == len(remote) == 2
    pixels = sorted(Image.open(p).tobytes() for p in remote)
    assert pixels == sorted(Image.open(p).tobytes() for p in local)
    embedded = {json.loads(Image.open(p).text["nodegraph-workflow"])["nodes"]["seed"]["inputs"]["seed"] for p in remote}
    assert embedded == {1, 2}  # each element's file carries its own seed


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli_main(["run", str(DEMO), "--executor", "ray"]) == 2
    assert 'pip install "nodegraph[ray]"' in capsys.readouterr().err
