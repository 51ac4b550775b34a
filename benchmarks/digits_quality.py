"""Quality of the bundled digits models, scored by the clean digits classifier (prints a table).

1. CFG: per class, `--per-class` samples at w = 1, 2, 4; accuracy = fraction the clean classifier
   labels as the requested digit.
2. Classifier guidance: the same model with the null label (unconditional), steered to each digit by
   the noisy classifier (scale s), hit rate vs. no guidance.
Run: python benchmarks/digits_quality.py [--per-class 30] [--steps 20] [--unet F] [--noisy F] [--clean F]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from nodegraph import Context
from nodes.conditioning import Condition
from nodes.fields import ModelField
from nodes.guidance import CFGField, ClassifierGuidedField
from nodes.models.checkpoint import bundled_path, load_model
from nodes.paths import CondOTPath
from nodes.solve_nodes import ode_solve
from nodes.solvers import BUILTIN_SOLVERS
from nodes.time_grids import uniform_grid


def sample(field, n: int, steps: int, seed: int) -> torch.Tensor:
    noise = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    return ode_solve(Context("s", "core/ode_solve"), field, noise, uniform_grid(steps, 0.0, 1.0),
                     {s.name: s for s in BUILTIN_SOLVERS}["heun"]).latent


@torch.no_grad()
def accuracy(clean, images: torch.Tensor, labels: torch.Tensor) -> float:
    predicted = clean(images.clamp(-1, 1), torch.ones(images.shape[0])).argmax(-1)
    return float((predicted == labels).float().mean())


def heldout_accuracy(steps: int) -> float:
    """Train the clean classifier's architecture on 80 % of the digits (seeded split), score the other 20 %."""
    from nodes.data.digits import load_digits_tensors
    from nodes.models.classifier import NoisyClassifier
    from nodes.training.classifier_training import classifier_loss_fn
    from nodes.training.common import Optimisation, fit

    images, labels = load_digits_tensors(16)
    order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(0))
    train, test = order[: int(0.8 * len(order))], order[int(0.8 * len(order)):]
    with torch.random.fork_rng():
        torch.manual_seed(1)
        net = NoisyClassifier(1, 16, 32, (1, 2, 2), 10)
    loss = classifier_loss_fn(CondOTPath(), images[train], labels[train], 64, 0.0, True,
                              torch.Generator().manual_seed(0))
    model, _ = fit(net, loss, Optimisation(steps=steps, lr=2e-3, ema_decay=0.995, warmup=100))
    return accuracy(model, images[test], labels[test])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of this benchmark (`argv` None: the command line)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--unet", default=None)
    parser.add_argument("--noisy", default=None)
    parser.add_argument("--clean", default=None)
    parser.add_argument("--heldout-steps", type=int, default=0, help="also measure the clean classifier held out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.heldout_steps:
        print(f"clean classifier, held-out accuracy (80/20 split): {heldout_accuracy(args.heldout_steps):.3f}")
    unet = load_model(args.unet or bundled_path("digits_cfg_unet"))
    noisy = load_model(args.noisy or bundled_path("digits_noisy_classifier"))
    clean = load_model(args.clean or bundled_path("digits_clean_classifier"))
    path = CondOTPath()
    base = ModelField(unet, path, unet.prediction)
    labels = torch.arange(10).repeat_interleave(args.per_class)
    null = Condition(labels=torch.tensor([10]))
    print("| sampling | w or scale | accuracy of clean classifier | seconds |\n|---|---|---|---|")
    for w in (1.0, 2.0, 4.0):
        start = time.perf_counter()
        images = sample(CFGField(base, Condition(labels=labels), null, w), labels.numel(), args.steps, seed=0)
        print(f"| CFG | w = {w:g} | {accuracy(clean, images, labels):.3f} | {time.perf_counter() - start:.0f} |")
    unguided = sample(base, labels.numel(), args.steps, seed=1)
    hits = [accuracy(clean, unguided, torch.full((labels.numel(),), d)) for d in range(10)]
    print(f"| unconditional (null label), no guidance | - | {sum(hits) / 10:.3f} (hit rate, mean over targets) | - |")
    for scale in args.guidance_scale:
        start = time.perf_counter()
        rates = []
        for digit in range(10):
            field = ClassifierGuidedField(base, noisy, digit, scale)
            images = sample(field, args.per_class, args.steps, seed=2 + digit)
            rates.append(accuracy(clean, images, torch.full((args.per_class,), digit)))
        print(f"| classifier guidance on null label | s = {scale:g} | {sum(rates) / 10:.3f} (hit rate) | "
              f"{time.perf_counter() - start:.0f} |")


if __name__ == "__main__":
    main()
