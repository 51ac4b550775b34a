"""Peak resident memory of `nodegraph run` on the default workflow, and how the cache budget bounds it.

Each row runs the CLI in a fresh Python process and reports that process's peak RSS
(resource.getrusage(RUSAGE_SELF).ru_maxrss, KiB on Linux). A single run's peak is the
forward pass's working set, which no cache budget changes. The sweep rows run the default workflow at
batch 256 with 1 Euler step for 16 seeds in one Session (cache_bytes = the budget, as `--cache-mb` sets):
every run adds about 7 MiB of outputs (latents, trajectory ends, decoded images, grid) to the cache,
so with the default 4 GiB budget the process keeps growing. With 192 MiB the models (about 140 MiB)
stay cached and old outputs are evicted; with 32 MiB the text encoder is not kept either and is
reloaded every run (memory for time).
Run: python -m benchmarks memory
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH, SEEDS = 256, 16
ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "default.json"

_PROBE = """
import resource, sys, torch
torch.set_num_threads(1)
from nodegraph.cli import main
code = main(sys.argv[1:])
print("PEAK_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""

_SWEEP = """
import json, resource, sys, torch
torch.set_num_threads(1)
from nodegraph import Session, Workflow
from benchmarks.end_to_end import default_spec
budget, batch, seeds, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
session = Session(device="cpu", cache_bytes=budget << 20, output_dir=out)
for seed in range(1, seeds + 1):
    spec = default_spec(batch, seed)
    spec["nodes"]["grid"]["inputs"]["steps"] = 1
    session.run(Workflow.from_dict(spec))
rss = next(int(li.split()[1]) for li in open("/proc/self/status") if li.startswith("VmRSS"))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak": peak / 1024, "rss": rss / 1024, "cache": session.cache.total_bytes / 2**20,
                  "evictions": session.cache.evictions}))
"""


def _python(code: str, args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process {args} failed:\n{proc.stderr[-2000:]}")
    return proc, seconds


def peak_rss(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of `nodegraph run default.json <args>` in a fresh process."""
    proc, seconds = _python(_PROBE, ["run", str(WORKFLOW), "--events", "none", "--no-disk-cache", *args])
    line = next(li for li in proc.stderr.splitlines() if li.startswith("PEAK_KIB"))
    return int(line.split()[1]) / 1024, seconds


def sweep(budget_mib: int, out: str) -> dict[str, float]:
    """Peak RSS, RSS after the last run and cache MiB after SEEDS seeds at batch BATCH in one Session."""
    import json

    proc, seconds = _python(_SWEEP, [str(budget_mib), str(BATCH), str(SEEDS), out])
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "seconds": seconds}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'nodegraph run default.json':<28} {'cache MiB':>9} {'peak RSS MiB':>13} {'wall s':>7}")
        for budget in ("4096", "32"):
            mib, seconds = peak_rss(["--out", tmp, "--cache-mb", budget])
            print(f"{'1 run, batch 4, 30 steps':<28} {budget:>9} {mib:>13.0f} {seconds:>7.1f}")
        print(f"\n{SEEDS} seeds in one Session, batch {BATCH}, 1 step")
        print(f"{'cache budget MiB':>16} {'peak RSS MiB':>13} {'RSS after MiB':>14} {'cached MiB':>11} "
              f"{'evictions':>10} {'wall s':>7}")
        for budget in (4096, 192, 32):
            r = sweep(budget, tmp)
            print(f"{budget:>16} {r['peak']:>13.0f} {r['rss']:>14.0f} {r['cache']:>11.1f} {r['evictions']:>10} "
                  f"{r['seconds']:>7.1f}")
    print("RSS includes Python, torch and the MiniLM text encoder (about 90 MB of weights)")


if __name__ == "__main__":
    main()
