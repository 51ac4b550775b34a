"""Measure the shipped shapes models: prompt agreement of generated images, VAE error, default workflow time.

    python benchmarks/shapes_t2i.py [--prompts 64] [--scale 4] [--steps 30]

Prompt agreement: captions of a held-out shapes draw (seed 777) are the prompts; one image per prompt
(CFG, Euler, CondOT), read back with `measure_shapes` (dominant colour, centroid position, fill-ratio
shape, area size, border background) and compared with the prompt's attributes. The same measurement
on real dataset images gives its ceiling. Times: the default workflow in a fresh Session (cold: model
load + text encoding) and again with a new noise seed (warm: only noise, solve, decode, save run).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from nodegraph import Session, Workflow
from nodes.data.shapes import ATTRIBUTES, make_shapes, measure_shapes
from nodes.fields import ModelField
from nodes.guidance import CFGField
from nodes.models.checkpoint import bundled_path, load_model
from nodes.models.vae_nodes import resolve_vae_file
from nodes.paths import CondOTPath
from nodes.solvers import euler
from nodes.text.encoder import load_text_encoder
from nodes.time_grids import uniform_grid

ROOT = Path(__file__).resolve().parent.parent


def agreement(prompts: int, scale: float, steps: int, seed: int = 0) -> dict[str, float]:
    data = make_shapes(prompts, seed=777)
    encoder = load_text_encoder()
    cond = encoder.encode(list(data.captions))
    null = encoder.encode([""])
    model = load_model(bundled_path("shapes_t2i"), "cpu", kind="backbone")
    vae = load_model(resolve_vae_file("shapes"), kind="vae")
    field = CFGField(ModelField(model, CondOTPath()), cond, null, scale)
    noise = torch.randn(prompts, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        latents = euler(field, noise, uniform_grid(steps), None)
    images = vae.latents_to_images(latents)
    measured = measure_shapes(images)
    real = measure_shapes((data.images + 1) / 2)
    rates = {name: float((measured[name] == data.attributes[name]).float().mean()) for name in ATTRIBUTES}
    ceiling = {name: float((real[name] == data.attributes[name]).float().mean()) for name in ATTRIBUTES}
    return {"generated": rates, "dataset_ceiling": ceiling, "images": images}


def vae_error(count: int = 1024) -> float:
    vae = load_model(resolve_vae_file("shapes"), kind="vae")
    images = (make_shapes(count, seed=12345).images + 1) / 2
    return float((vae.latents_to_images(vae.images_to_latents(images)) - images).pow(2).mean())


def workflow_times() -> tuple[float, float]:
    data = json.loads((ROOT / "workflows" / "default.json").read_text())
    with tempfile.TemporaryDirectory() as out:
        session = Session(output_dir=out)
        start = time.perf_counter()
        session.run(Workflow.from_dict(data))
        cold = time.perf_counter() - start
        data["nodes"]["seed"]["inputs"]["seed"] = 1
        start = time.perf_counter()
        session.run(Workflow.from_dict(data))
        warm = time.perf_counter() - start
    return cold, warm


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of this benchmark (`argv` None: the command line)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--scale", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--grid", type=str, default="", help="save the generated images as a PNG grid here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cold, warm = workflow_times()  # first, so that "cold" includes importing transformers and loading every model
    print(f"default workflow: cold {cold:.2f} s, warm (new seed) {warm:.2f} s")
    result = agreement(args.prompts, args.scale, args.steps)
    print(f"prompt agreement over {args.prompts} prompts (CFG w={args.scale}, {args.steps} Euler steps)")
    print(f"{'attribute':<12}{'generated':>10}{'dataset':>10}")
    for name in ATTRIBUTES:
        print(f"{name:<12}{result['generated'][name]:>10.3f}{result['dataset_ceiling'][name]:>10.3f}")
    if args.grid:
        from nodes.image_io import image_grid, tensor_to_pil

        tensor_to_pil(image_grid.node_type.fn(result["images"], columns=8))[0].save(args.grid)
    print(f"VAE reconstruction MSE on held-out shapes ([0, 1] pixels): {vae_error():.5f}")


if __name__ == "__main__":
    main()
