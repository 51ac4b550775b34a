"""The jobs API on a local server: submit latency, and many clients submitting at once.

A `nodegraph serve` app (uvicorn on 127.0.0.1, a free port, a fresh data folder) with the built-in
nodes. One client submits a one-node workflow N times (each submit validates the workflow and
commits a row: the answer's latency), then C clients submit J jobs each at the same moment (wall
time until every job is stored, and until every job has run), then one job is followed from submit
to its `finished` event. Run: python -m benchmarks jobs_api [-- --clients 8 --jobs 3 --repeat 50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks jobs_api")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=3, help="jobs per client")
    parser.add_argument("--repeat", type=int, default=50, help="sequential submits timed one by one")
    return parser.parse_args(argv)


def quick(seed: int) -> dict:
    return {"format": "nodegraph/workflow", "version": 1, "name": "bench",
            "nodes": {"seed": {"type": "core/seed", "inputs": {"seed": seed}}}}


def main() -> None:
    from nodegraph import Session
    from nodegraph.client import Client
    from nodegraph.plugins import load_registry
    from ui.app import create_api_server, make_context
    from ui.serve import BackgroundServer

    args = parse_args()
    registry, _ = load_registry(entry_points=False)
    with tempfile.TemporaryDirectory() as tmp:
        context = make_context(Session(registry, device="cpu", output_dir=Path(tmp) / "out"),
                               data_dir=Path(tmp) / "data")
        server = BackgroundServer(create_api_server(context)).start()
        try:
            client = Client(server.url)
            latencies = []
            for i in range(args.repeat):
                began = time.perf_counter()
                client.submit(quick(i))
                latencies.append(time.perf_counter() - began)
            for job in client.keys:
                client.wait(job, timeout=120)
            clients = [Client(server.url) for _ in range(args.clients)]
            barrier = threading.Barrier(args.clients + 1)

            def submit(index: int, each: Client) -> None:
                barrier.wait()
                for j in range(args.jobs):
                    each.submit(quick(10_000 + index * args.jobs + j))

            threads = [threading.Thread(target=submit, args=(i, c)) for i, c in enumerate(clients)]
            for thread in threads:
                thread.start()
            barrier.wait()
            began = time.perf_counter()
            for thread in threads:
                thread.join()
            stored = time.perf_counter() - began
            for each in clients:
                for job in each.keys:
                    each.wait(job, timeout=120)
            ran = time.perf_counter() - began
            began = time.perf_counter()
            client.wait(client.submit(quick(99_999)), timeout=120)
            round_trip = time.perf_counter() - began
        finally:
            server.stop()
            context.close()
    total = args.clients * args.jobs
    median, p90 = statistics.median(latencies), statistics.quantiles(latencies, n=10)[-1]
    print(f"submit latency ({args.repeat} sequential, one-node workflow): median {1000 * median:.1f} ms, "
          f"p90 {1000 * p90:.1f} ms")
    print(f"{args.clients} clients x {args.jobs} jobs at once: all {total} stored in {stored:.2f} s "
          f"({total / stored:.0f} submits/s), all run in {ran:.2f} s")
    print(f"submit -> finished event (SSE) for one job on an idle queue: {1000 * round_trip:.1f} ms")
