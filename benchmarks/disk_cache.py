"""Whole-process wall time of `nodegraph run workflows/default.json`, with and without the disk cache.

Each row is a fresh Python process (what a user or a worker pays: interpreter, imports, plugin
loading, the run, the PNG), timed from outside; the median of interleaved repetitions.

* no disk cache: `--no-disk-cache`, every node runs (the text encoder loads, about 4 s of a quiet
  machine's 5 s);
* empty disk cache: the same plus writing every storable output (the cost of filling it);
* warm, same workflow: the grid of images comes from disk, only the save runs;
* warm, new seed: each repetition a seed never run before; both prompt encodings and the time grid
  come from disk, so the text encoder is never loaded, while the U-Net and the VAE load and the
  solver runs;
* floor: `nodegraph validate default.json`, the process start with no run at all.

Goal: a warm cache makes the cold process take less than half the time without one.
Run: python -m benchmarks disk_cache [-- --repeats 5 --threads 1]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "default.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of this benchmark (`argv` None: the command line)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks disk_cache")
    parser.add_argument("--repeats", type=int, default=5, help="processes per row (the median is shown)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each process")
    return parser.parse_args(argv)


def nodegraph(*args: str) -> tuple[float, str]:
    """(wall seconds, stderr) of one `nodegraph` process."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nodegraph.cli", *args], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"nodegraph {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return seconds, proc.stderr


def ran_and_cached(stderr: str) -> str:
    found = re.search(r"run 1: (\d+) ran, (\d+) cached", stderr)
    return f"{found[1]} ran, {found[2]} cached" if found else "-"


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, warm = Path(tmp) / "out", Path(tmp) / "warm"
        common = ["--out", str(out), "--threads", str(args.threads), "--events", "text"]
        run = ["run", str(WORKFLOW), *common]
        nodegraph(*run, "--disk-cache", str(warm))  # fill the warm cache (seed 0)
        seeds = iter(range(1000, 2000))
        rows = {
            "no disk cache": lambda: nodegraph(*run, "--no-disk-cache"),
            "empty disk cache": lambda: nodegraph(*run, "--disk-cache", str(Path(tmp) / f"empty{time.time_ns()}")),
            "warm, same workflow": lambda: nodegraph(*run, "--disk-cache", str(warm)),
            "warm, new seed": lambda: nodegraph(*run, "--disk-cache", str(warm), "--set", f"seed.seed={next(seeds)}"),
            "floor (validate only)": lambda: nodegraph("validate", str(WORKFLOW)),
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        nodes: dict[str, str] = {}
        for _ in range(args.repeats):
            for name, row in rows.items():
                seconds, stderr = row()
                times[name].append(seconds)
                nodes[name] = ran_and_cached(stderr)
    base = statistics.median(times["no disk cache"])
    print(f"nodegraph run default.json, fresh process each time; {args.repeats} repetitions, interleaved, "
          f"{args.threads} torch thread(s)")
    print(f"{'case':<22} {'median s':>9} {'min s':>7} {'max s':>7} {'vs none':>8}  nodes")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<22} {median:>9.2f} {min(values):>7.2f} {max(values):>7.2f} {median / base:>8.2f}  "
              f"{nodes[name]}")
    print("goal: warm rows under 0.5 of 'no disk cache'")


if __name__ == "__main__":
    main()
