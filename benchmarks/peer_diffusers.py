"""Our solver + CFG loop vs a diffusers FlowMatchEulerDiscreteScheduler loop on the same backbone.

Same bundled text-to-image U-Net, same prompt / null encodings, same seeded noise, 30 steps, CFG w = 4
with cond and null in one batched pass. Ours: nodes.solvers.euler over CFGField(ModelField(net, CondOT))
on a uniform grid. Peer: scheduler.set_timesteps(sigmas=...) with the same grid as noise levels
sigma = 1 - t, the network called at t = 1 - sigma, and `scheduler.step(-u, ...)` (diffusers' flow
velocity is d x / d sigma = -u). The two final latents are compared, then timed (process CPU seconds,
one torch thread, median of interleaved repetitions).
diffusers is not a nodegraph dependency: `pip install diffusers` to run this; it is skipped otherwise.
Run: python -m benchmarks peer_diffusers
"""

from __future__ import annotations

import statistics
import tempfile

import torch

from nodegraph import Session
from nodes.conditioning import Condition
from nodes.fields import ModelField
from nodes.guidance import CFGField
from nodes.paths import CondOTPath
from nodes.solvers import euler
from nodes.time_grids import uniform_grid

from .end_to_end import HandWritten, cpu_seconds, default_spec

STEPS = 30
SCALE = 4.0


def ours(hand: HandWritten, noise: torch.Tensor) -> torch.Tensor:
    field = CFGField(ModelField(hand.net, CondOTPath()), hand.cond, hand.null, SCALE)
    with torch.no_grad():
        return euler(field, noise, uniform_grid(STEPS))


def peer(hand: HandWritten, noise: torch.Tensor, scheduler) -> torch.Tensor:  # noqa: ANN001
    times = uniform_grid(STEPS).float()
    scheduler.set_timesteps(sigmas=(1 - times[:-1]).tolist(), device="cpu")
    batch = noise.shape[0]
    both = Condition.cat([hand.cond.expand(batch), hand.null.expand(batch)])
    x = noise
    with torch.no_grad():
        for i, timestep in enumerate(scheduler.timesteps):
            t = (1 - scheduler.sigmas[i]).to(x.dtype).expand(2 * batch)
            out = hand.net(torch.cat([x, x]), t, both)
            u_cond, u_null = out[:batch], out[batch:]
            velocity = u_null + SCALE * (u_cond - u_null)
            x = scheduler.step(-velocity, timestep, x, return_dict=False)[0]
    return x


def main() -> None:
    try:
        from diffusers import FlowMatchEulerDiscreteScheduler
    except ImportError:
        print("skipped: diffusers is not installed (pip install diffusers; it is a benchmark-only package)")
        return
    import diffusers

    torch.set_num_threads(1)
    print(f"CPU, torch {torch.__version__}, diffusers {diffusers.__version__}, 1 thread; shapes_t2i U-Net, "
          f"{STEPS} Euler steps, CFG w={SCALE}; median process CPU time")
    print(f"{'batch':>6} {'ours ms':>8} {'diffusers ms':>13} {'ours/diffusers':>15} {'max |diff|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(device="cpu", output_dir=tmp)
        for batch, repeats in ((1, 15), (4, 15), (64, 3)):
            hand = HandWritten(session, default_spec(batch))
            scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
            noise = torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(0))
            diff = (ours(hand, noise) - peer(hand, noise, scheduler)).abs().max().item()
            mine, theirs = [], []
            for _ in range(repeats):
                mine.append(cpu_seconds(lambda h=hand, z=noise: ours(h, z)))
                theirs.append(cpu_seconds(lambda h=hand, z=noise, s=scheduler: peer(h, z, s)))
            a, b = statistics.median(mine), statistics.median(theirs)
            print(f"{batch:>6} {1e3 * a:>8.1f} {1e3 * b:>13.1f} {a / b:>15.3f} {diff:>11.2e}")
    print("goal: ours/diffusers <= 1 (equal or faster)")


if __name__ == "__main__":
    main()
