"""End-to-end text-to-image sampling: the default workflow through a Session vs a hand-written script.

Graph: Session.run(workflows/default.json) warm — the model, VAE, text encoder and both prompt encodings
come from the cache; every repetition changes the seed, so noise, 30 Euler steps of CFG (w = 4, cond and
null in one batched pass), VAE decode, image grid and PNG save really run. Hand: the same model
objects, the same seeded noise, the same loop, decode, grid and PNG save, written as plain torch.
Times are process CPU seconds (time.process_time, torch on one thread) so other jobs on the shared
machine distort them less; median of interleaved repetitions. Also: images/s at batch 1 and 64, with
fp32 and with the `core/accelerate` options (bf16 autocast, channels_last) inserted after the model.
Run: python -m benchmarks end_to_end
"""

from __future__ import annotations

import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from nodegraph import Session, Workflow
from nodes.conditioning import Condition

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "workflows" / "default.json"


def default_spec(batch: int | None = None, seed: int = 0, accelerate: dict[str, Any] | None = None) -> dict:
    """The default workflow as a dict: optional batch size, seed and a core/accelerate node after the model."""
    spec = json.loads(DEFAULT.read_text())
    nodes = spec["nodes"]
    nodes["seed"]["inputs"]["seed"] = seed
    if batch is not None:
        nodes["noise"]["inputs"]["shape"] = [batch, *nodes["noise"]["inputs"]["shape"][1:]]
        nodes["images"]["inputs"]["columns"] = min(8, batch)
    if accelerate is not None:
        nodes["fast"] = {"type": "core/accelerate", "inputs": {"backbone": {"from": "model", "output": "backbone"},
                                                              **accelerate}}
        nodes["field"]["inputs"]["backbone"] = {"from": "fast", "output": "backbone"}
    return spec


def default_workflow(batch: int | None = None, seed: int = 0, accelerate: dict[str, Any] | None = None) -> Workflow:
    return Workflow.from_dict(copy.deepcopy(default_spec(batch, seed, accelerate)))


class HandWritten:
    """The default workflow's math as one plain function over the same model objects."""

    def __init__(self, session: Session, spec: dict) -> None:
        objects = session.run(Workflow.from_dict(spec), outputs=["model", "vae", "prompt", "null"])
        self.net = objects.value("model")
        self.vae = objects.value("vae")
        self.cond, self.null = objects.value("prompt"), objects.value("null")
        nodes = spec["nodes"]
        self.shape = tuple(nodes["noise"]["inputs"]["shape"])
        self.steps = nodes["grid"]["inputs"]["steps"]
        self.scale = nodes["cfg"]["inputs"]["scale"]
        self.columns = nodes["images"]["inputs"]["columns"]
        self.prefix = nodes["save"]["inputs"]["prefix"]

    def sample(self, seed: int) -> torch.Tensor:
        """Seeded noise, Euler steps x += h [u(x|null) + w (u(x|c) - u(x|null))] in one batched pass, decode."""
        x = torch.randn(*self.shape, generator=torch.Generator().manual_seed(seed))
        batch = x.shape[0]
        both = Condition.cat([self.cond.expand(batch), self.null.expand(batch)])
        times = torch.linspace(0, 1, self.steps + 1, dtype=torch.float64).float()
        with torch.no_grad():
            for i in range(self.steps):
                out = self.net(torch.cat([x, x]), times[i].expand(2 * batch), both)
                u_cond, u_null = out[:batch], out[batch:]
                x = x + (times[i + 1] - times[i]) * (u_null + self.scale * (u_cond - u_null))
            return self.vae.latents_to_images(x)

    def grid(self, images: torch.Tensor, padding: int = 2) -> torch.Tensor:
        batch, channels, height, width = images.shape
        columns = min(self.columns, batch)
        rows = -(-batch // columns)
        out = images.new_ones(channels, rows * (height + padding) + padding, columns * (width + padding) + padding)
        for index in range(batch):
            row, col = divmod(index, columns)
            top, left = padding + row * (height + padding), padding + col * (width + padding)
            out[:, top:top + height, left:left + width] = images[index]
        return out

    def __call__(self, seed: int, folder: Path) -> torch.Tensor:
        grid = self.grid(self.sample(seed))
        pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels, "RGB").save(folder / f"{self.prefix}_{seed:05d}.png")
        return grid


def cpu_seconds(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def compare(batch: int | None, repeats: int, folder: Path) -> dict[str, float]:
    """Median CPU seconds of the warm graph run and the hand-written script (interleaved), and their ratio."""
    session = Session(device="cpu", output_dir=folder)
    spec = default_spec(batch)
    hand = HandWritten(session, spec)
    first = session.run(default_workflow(batch), outputs=["images"])
    assert torch.allclose(first.value("images"), hand(0, folder)[None], atol=1e-5), "graph and script disagree"
    graph_times, hand_times = [], []
    for rep in range(1, repeats + 1):
        seed = 1000 + rep
        graph_times.append(cpu_seconds(lambda s=seed: session.run(default_workflow(batch, s))))
        hand_times.append(cpu_seconds(lambda s=seed: hand(s, folder)))
    graph, script = statistics.median(graph_times), statistics.median(hand_times)
    return {"graph": graph, "hand": script, "ratio": graph / script}


def throughput(batch: int, repeats: int, folder: Path, accelerate: dict[str, Any] | None = None) -> float:
    """Images per CPU second of the warm default workflow at `batch` (median over seeds)."""
    session = Session(device="cpu", output_dir=folder)
    session.run(default_workflow(batch, 0, accelerate))
    times = [cpu_seconds(lambda s=seed: session.run(default_workflow(batch, s, accelerate)))
             for seed in range(1, repeats + 1)]
    return batch / statistics.median(times)


def main() -> None:
    torch.set_num_threads(1)  # one thread: steadier timings on a shared machine
    print(f"CPU, torch {torch.__version__}, {torch.get_num_threads()} thread; workflows/default.json "
          "(shapes_t2i U-Net, MiniLM text, CFG w=4, 30 Euler steps, VAE decode, PNG); median process CPU time")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'batch':>6} {'graph ms':>9} {'script ms':>10} {'ratio':>6}")
        for batch, repeats in ((4, 15), (1, 15), (64, 3)):
            r = compare(batch, repeats, folder)
            print(f"{batch:>6} {1e3 * r['graph']:>9.1f} {1e3 * r['hand']:>10.1f} {r['ratio']:>6.3f}")
        print("goal: ratio <= 1.05")
        print(f"\n{'options':<28} {'batch':>6} {'images/s':>9}")
        options = (("fp32", None), ("bf16 autocast", {"dtype": "bfloat16"}),
                   ("fp32 channels_last", {"dtype": "float32", "channels_last": True}))
        for batch, repeats in ((1, 7), (64, 3)):
            for name, accelerate in options:
                print(f"{name:<28} {batch:>6} {throughput(batch, repeats, folder, accelerate):>9.1f}")
        print("GPU numbers need a device; none was lent to this task.")


if __name__ == "__main__":
    main()
