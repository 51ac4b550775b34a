"""Cache effectiveness on the default text-to-image workflow in one Session.

A cold run, then re-runs with one change each: a new seed, a new guidance scale, a new prompt, and
nothing changed. For each: CPU seconds and the nodes that really ran (the rest came from the cache).
Expected: a seed change re-runs seed -> noise -> solve -> decode -> images (+ save, a side effect that
always runs); the text encoder, both prompt encodings, the U-Net and the VAE are never reloaded.
Run: python -m benchmarks cache
"""

from __future__ import annotations

import tempfile

import torch

from nodegraph import Session, Workflow

from .end_to_end import cpu_seconds, default_spec


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(device="cpu", output_dir=tmp)
        cold = default_spec()
        seed = default_spec(seed=7)
        scale = default_spec(seed=7)
        scale["nodes"]["cfg"]["inputs"]["scale"] = 6.0
        prompt = default_spec(seed=7)
        prompt["nodes"]["cfg"]["inputs"]["scale"] = 6.0
        prompt["nodes"]["prompt"]["inputs"]["text"] = "a small blue square at the bottom right on a white background"
        cases = (("cold (first run)", cold), ("seed 0 -> 7", seed), ("scale 4 -> 6", scale),
                 ("prompt changed", prompt), ("nothing changed", prompt))
        print(f"{'change':<18} {'CPU s':>7} {'ran':>4} {'cached':>7}  nodes that ran")
        for name, spec in cases:
            workflow = Workflow.from_dict(spec)
            box: dict = {}
            seconds = cpu_seconds(lambda w=workflow, b=box: b.setdefault("r", session.run(w)))
            result = box["r"]
            print(f"{name:<18} {seconds:>7.2f} {len(result.ran):>4} {len(result.cached):>7}  {', '.join(result.ran)}")
        cache = session.cache
        print(f"cache: {len(cache)} entries, {cache.total_bytes / 2**20:.1f} MiB of "
              f"{cache.budget_bytes / 2**20:.0f} MiB, "
              f"{cache.hits} hits, {cache.misses} misses, {cache.evictions} evictions")
        print("goal: a seed change re-runs only seed, noise, solve, decode, images (+ save)")


if __name__ == "__main__":
    main()
