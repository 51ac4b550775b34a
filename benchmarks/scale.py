"""A 16-seed sweep of workflows/default.json: (a) sequential, 16 runs of one Session; (b) one run of the
same sweep as a list inside the graph (what `nodegraph run --sweep seed.seed=...` builds), its 16 noises
solved as one batch: one CFG forward pass of batch 2 x 64 per step instead of 16 of batch 2 x 4.
(b') is the same seeds as a `core/seeds` list, whose images `core/image_grid` takes as one grid.
(c) the 16 runs of (a) spread over Ray workers (`nodegraph.ray_executor`, 2 by default), each worker a
warm Session of its own; its images are checked bit-equal to (a)'s. (c) is timed by wall clock only (its
work happens in the worker processes).

Both warm (models and prompt encodings cached before timing); each repetition uses new seeds so the
noise, solver, decode, grid and save really run; repetitions alternate (a) and (b). Reports images per
process-CPU second (and per wall second) and checks that (b) gives (a)'s images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nodegraph import Session, Workflow
from nodegraph.lists import sweep

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "workflows" / "default.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16, help="seeds per sweep (default 16)")
    parser.add_argument("--steps", type=int, default=30, help="solver steps (default: the workflow's 30)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--ray-workers", type=int, default=2, help="Ray workers of row (c); 0: no row (c)")
    return parser.parse_args(argv)


def _timed(run) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = run()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(args.threads)
    base = Workflow.load(DEFAULT)
    base.set("grid.steps", args.steps)
    images_per_seed = base.nodes["noise"].inputs["shape"][0]
    with tempfile.TemporaryDirectory() as out:
        session = Session(device="cpu", output_dir=out)
        session.run(base)  # loads the models and encodes both prompts: cached for every row below
        rows: dict[str, list[tuple[float, float]]] = {"a": [], "b": [], "b'": []}
        worst = 0.0
        for repeat in range(args.repeats):
            seeds = list(range(1000 * (repeat + 1), 1000 * (repeat + 1) + args.seeds))

            def sequential(seeds=seeds):
                return [session.run(base.copy_deep().set("seed.seed", s), outputs=["images", "save"]).value("images")
                        for s in seeds]

            swept, _ = sweep(base, [("seed.seed", seeds)])
            listed = base.copy_deep()
            listed.nodes["seed"].type = "core/seeds"
            listed.nodes["seed"].inputs = {"seed": seeds[0] + 500, "count": args.seeds}
            listed.set("noise.seed", {"from": "seed", "output": "seeds"})
            cpu_a, wall_a, alone = _timed(sequential)
            cpu_b, wall_b, together = _timed(lambda swept=swept: session.run(swept, outputs=["images", "save"]))
            cpu_c, wall_c, _ = _timed(lambda listed=listed: session.run(listed))
            rows["a"].append((cpu_a, wall_a))
            rows["b"].append((cpu_b, wall_b))
            rows["b'"].append((cpu_c, wall_c))
            worst = max(worst, *(float((x - y).abs().max()) for x, y in zip(together.value("images"), alone,
                                                                             strict=True)))
        ray_walls, ray_equal = _ray_row(args, base, session, out) if args.ray_workers > 0 else ([], True)
    images = args.seeds * images_per_seed
    names = {"a": "(a) sequential: one run per seed", "b": "(b) one run, the sweep batched through the solver",
             "b'": "(b') one run, a core/seeds list into one grid"}
    cpu_a = statistics.median(c for c, _ in rows["a"])
    wall_a = statistics.median(w for _, w in rows["a"])
    print(f"{args.seeds} seeds x {images_per_seed} images, {args.steps} Euler steps, CFG w = 4, "
          f"{args.threads} torch thread(s), median of {args.repeats}")
    print(f"{'row':<52} {'CPU s':>7} {'wall s':>7} {'img/CPU s':>10} {'img/wall s':>10} {'vs (a)':>7}")
    for key, name in names.items():
        cpu = statistics.median(c for c, _ in rows[key])
        wall = statistics.median(w for _, w in rows[key])
        print(f"{name:<52} {cpu:>7.2f} {wall:>7.2f} {images / cpu:>10.2f} {images / wall:>10.2f} {cpu_a / cpu:>6.2f}x")
    if ray_walls:
        wall = statistics.median(ray_walls)
        name = f"(c) the runs of (a) on {args.ray_workers} Ray workers"
        print(f"{name:<52} {'-':>7} {wall:>7.2f} {'-':>10} {images / wall:>10.2f} {wall_a / wall:>6.2f}x (wall)")
        print(f"(c) images bit-equal to in-process runs: {ray_equal}")
    print(f"largest difference between (b) and (a) images: {worst:.2e}")


def _ray_row(args: argparse.Namespace, base: Workflow, session: Session, out: str) -> tuple[list[float], bool]:
    """Wall seconds of each repetition of the sweep as separate runs on Ray workers (warmed first), and
    whether the images of the last repetition equal an in-process Session's bit for bit."""
    from nodegraph.ray_executor import RayExecutor, WorkerSpec

    executor = RayExecutor(WorkerSpec(device="cpu", output_dir=out, threads=args.threads), workers=args.ray_workers,
                           local_session=session)
    try:
        executor.map([base] * args.ray_workers)  # one warm-up run per worker: models loaded, prompts encoded
        walls, equal = [], True
        for repeat in range(args.repeats):
            seeds = list(range(1000 * (repeat + 1), 1000 * (repeat + 1) + args.seeds))
            variants = [base.copy_deep().set("seed.seed", s) for s in seeds]
            start = time.perf_counter()
            results = executor.map(variants, outputs=["images", "save"])
            walls.append(time.perf_counter() - start)
        for variant, (result, _) in list(zip(variants, results, strict=True))[:2]:
            here = session.run(variant, outputs=["images"]).value("images")
            equal = equal and bool((here == result.value("images")).all())
        return walls, equal
    finally:
        executor.close()


if __name__ == "__main__":
    main()
