"""workflows/sd15_text_to_image.json through a Session vs diffusers' StableDiffusionPipeline on the same folder.

Both sides load the same diffusers SD 1.x folder (same weights), draw the same seeded noise, take 20 DDIM steps
with CFG 7.5 (cond and null in one forward pass of 2 x batch) and return the final latents; the two latents are
compared (max |diff|) before anything is timed. Models:
- tiny: the random-weight SD1.5 of tests/tiny_diffusers.py (8x8 latents), where per-step overheads show;
- mid: an SD1.5-shaped U-Net with random weights: 4 levels, cross-attention on the first three, 2 layers per
  block, 8 heads, cross_attention_dim 768, but block channels (64, 128, 256, 256) instead of (320, 640, 1280,
  1280): 37.5M parameters instead of 860M. Its text encoder is a 4-layer CLIP of width 768; its VAE is narrow
  but has SD's 8x downscale, so 64x64 latents are 512x512 images.
Ours: Session.run(workflow with a new seed, outputs=["solve"]) on a warm Session: the model and both prompt
encodings come from the cache, noise and the solver run. Peer: pipe(prompt_embeds=..., negative_prompt_embeds=...,
output_type="latent") with DDIMScheduler: the prompt encodings are computed once up front, so neither side
encodes text or decodes images inside the timed call.
Time: process CPU seconds (time.process_time, torch on one thread), runs interleaved A B B A ..., the median
per side; the spread column is the range of the per-pair ratios. Memory: one fresh process per model and side,
glibc told to mmap every allocation >= 64 KiB (MALLOC_MMAP_THRESHOLD_) so freed tensors leave RSS at once;
after loading and one warm-up run per batch, the peak RSS is reset (/proc/self/clear_refs) and the peak of one
seed-change run is read (VmHWM) minus the RSS before it. A step's working set is the same at every step, so
the memory runs take MEMORY_STEPS steps. Cold load: wall seconds from a fresh process's start (imports
included) to the model and the prompt encodings ready.
Run: python -m benchmarks peer_pipelines [-- --quick | --models tiny | --mid-latent 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "sd15_text_to_image.json"
PROMPT = "a photo of the red cat"
STEPS, SCALE = 20, 7.5
MEMORY_STEPS = 2
MID_CHANNELS = (64, 128, 256, 256)


@dataclass(frozen=True)
class Case:
    """One table row: a model, its latent side (pixels = 8x for mid, 2x for tiny), a batch, repetitions."""

    model: str
    latent: int
    batch: int
    repeats: int


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peer_pipelines", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2 steps, 1 repetition (a smoke test)")
    parser.add_argument("--models", default="tiny,mid", help="comma-separated: tiny, mid (default both)")
    parser.add_argument("--mid-latent", type=int, default=0,
                        help="latent side for every mid row (default: 64 at batch 1, 32 at batch 4 and 16)")
    return parser.parse_args(argv)


def cases(args: argparse.Namespace) -> list[Case]:
    if args.quick:
        return [Case("tiny", 8, batch, 1) for batch in (1, 4, 16)]
    rows: list[Case] = []
    models = args.models.split(",")
    if "tiny" in models:
        rows += [Case("tiny", 8, 1, 21), Case("tiny", 8, 4, 15), Case("tiny", 8, 16, 9)]
    if "mid" in models:
        # One run of 20 steps at 64x64 latents takes ~75 s at batch 1 on one core of the development machine
        # (self-attention over 4096 tokens dominates), so batch 4 and 16 would take 5 and 20 minutes a run.
        rows += [Case("mid", args.mid_latent or latent, batch, repeats)
                 for latent, batch, repeats in ((64, 1, 2), (32, 4, 2), (32, 16, 1))]
    return rows


# Model folders --------------------------------------------------------------------------------------------------


def build_mid_sd15(folder: Path, channels: tuple[int, ...] = MID_CHANNELS) -> Path:
    """An SD1.5-shaped pipeline folder with random weights (seeded): SD1.5's U-Net layout at narrower channels."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.tiny_diffusers import CLIP_MAX_LENGTH, SD_BETAS, clip_tokenizer

    tokenizer = clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=channels, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8).eval()
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=4,
        num_attention_heads=12, max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 32, 64, 64),
                        layers_per_block=1, latent_channels=4, sample_size=512, scaling_factor=0.18215).eval()
    scheduler = DDIMScheduler(**SD_BETAS, steps_offset=1, set_alpha_to_one=False, clip_sample=False,
                              timestep_spacing="leading", prediction_type="epsilon")
    pipeline = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def build(model: str, folder: Path) -> Path:
    if model == "tiny":
        from tests.tiny_diffusers import build_sd15

        return build_sd15(folder)
    return build_mid_sd15(folder)


def pixels(model: str, latent: int) -> int:
    return latent * (2 if model == "tiny" else 8)  # the VAEs' downscale factors


def unet_parameters(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(next((folder / "unet").glob("*.safetensors"))), "pt") as weights:
        return sum(_numel(weights.get_slice(name).get_shape()) for name in weights.keys())


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


# The two sides ----------------------------------------------------------------------------------------------------


class Ours:
    """The shipped SD1.5 workflow in one Session, latents only (`outputs=["solve"]`)."""

    def __init__(self, folder: Path, out: Path) -> None:
        from nodegraph import Session

        self.folder = folder
        self.session = Session(device="cpu", output_dir=out, read_roots=[folder.parent])

    def workflow(self, latent_px: int, batch: int, steps: int, seed: int):  # noqa: ANN201
        from nodegraph import Workflow

        w = Workflow.load(WORKFLOW)
        settings = {"model.path": str(self.folder), "noise.width": latent_px, "noise.height": latent_px,
                    "noise.batch": batch, "grid.steps": steps, "cfg.scale": SCALE, "prompt.text": PROMPT,
                    "seed.seed": seed}
        for address, value in settings.items():
            w = w.set(address, value)
        return w

    def load(self) -> None:
        self.session.run(self.workflow(64, 1, 1, 0), outputs=["model", "prompt", "null"])

    def __call__(self, px: int, batch: int, steps: int, seed: int) -> torch.Tensor:
        return self.session.run(self.workflow(px, batch, steps, seed), outputs=["solve"]).value("solve.latent")


class Peer:
    """diffusers' StableDiffusionPipeline with DDIMScheduler; prompt encodings computed once in `load`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self) -> None:
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(self.folder, local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        with torch.no_grad():
            self.cond, self.null = pipe.encode_prompt(PROMPT, "cpu", 1, True, negative_prompt="")

    def __call__(self, px: int, batch: int, steps: int, seed: int) -> torch.Tensor:
        return self.pipe(prompt_embeds=self.cond, negative_prompt_embeds=self.null, height=px, width=px,
                         num_inference_steps=steps, guidance_scale=SCALE, num_images_per_prompt=batch,
                         generator=torch.Generator().manual_seed(seed), output_type="latent").images


# Memory: one fresh process per model and side -----------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def probe(side: str, folder: str, rows: list[list[int]], steps: int, out: str, started: float) -> dict:
    """In a fresh process started at `started` (perf_counter): seconds until the model and prompts are ready
    (imports included), then per (image px, batch) the peak RSS of one seed-change run above the RSS before it
    (MiB)."""
    torch.set_num_threads(1)
    runner: Ours | Peer = Ours(Path(folder), Path(out)) if side == "ours" else Peer(Path(folder))
    runner.load()
    report: dict = {"load_s": time.perf_counter() - started, "loaded_mib": _status_kib("VmRSS") / 1024, "rows": {}}
    for px, batch in rows:
        runner(px, batch, steps, 0)  # warm-up at this batch
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        runner(px, batch, steps, 1)
        report["rows"][f"{px}x{batch}"] = (_status_kib("VmHWM") - before) / 1024
    return report


_PROBE = """
import time
started = time.perf_counter()
import json, sys
from benchmarks.peer_pipelines import probe
side, folder, rows, steps, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
print("PROBE", json.dumps(probe(side, folder, rows, steps, out, started)))
"""


def measure_memory(side: str, folder: Path, rows: list[tuple[int, int]], steps: int, out: Path) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 << 10)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, side, str(folder), json.dumps(rows), str(steps), str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe ({side}) failed:\n{proc.stderr[-3000:]}")
    line = next(li for li in proc.stdout.splitlines() if li.startswith("PROBE "))
    return json.loads(line[len("PROBE "):])


# Time: interleaved in this process ----------------------------------------------------------------------------


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def compare(ours: Ours, peer: Peer, case: Case, steps: int) -> dict[str, float]:
    px = pixels(case.model, case.latent)
    diff = (ours(px, case.batch, steps, 0) - peer(px, case.batch, steps, 0)).abs().max().item()
    mine, theirs = [], []
    for rep in range(case.repeats):
        seed = 1000 + rep
        first, second = (ours, peer) if rep % 2 == 0 else (peer, ours)  # A B, B A, ...: drift hits both sides
        t_first = cpu_seconds(lambda f=first, s=seed: f(px, case.batch, steps, s))
        t_second = cpu_seconds(lambda f=second, s=seed: f(px, case.batch, steps, s))
        a, b = (t_first, t_second) if first is ours else (t_second, t_first)
        mine.append(a)
        theirs.append(b)
    pair_ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
    return {"ours": statistics.median(mine), "peer": statistics.median(theirs), "diff": diff,
            "lo": min(pair_ratios), "hi": max(pair_ratios)}


class StubUNet(torch.nn.Module):
    """Stands in for the U-Net (same config, its weights kept as a child) and returns x / 2: what is left of a
    sampling run is the loop around the network, on both sides."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet, self.config = unet, unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, sample: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor]:
        return (sample * 0.5,)


def loop_overhead(ours: Ours, peer: Peer, px: int, batch: int, steps: int, repeats: int) -> tuple[float, float]:
    """Median CPU seconds of a run with both U-Nets replaced by `StubUNet` (interleaved), then restored."""
    backbone = ours.session.run(ours.workflow(px, batch, steps, 0), outputs=["model"]).value("model.backbone")
    unet = backbone.model
    backbone.model = peer.pipe.unet = StubUNet(unet)
    try:
        mine, theirs = [], []
        for rep in range(repeats):
            mine.append(cpu_seconds(lambda s=rep: ours(px, batch, steps, 5000 + s)))
            theirs.append(cpu_seconds(lambda s=rep: peer(px, batch, steps, 5000 + s)))
    finally:
        backbone.model = peer.pipe.unet = unet
    return statistics.median(mine), statistics.median(theirs)


def _ratio(mine: float, theirs: float) -> str:
    """The memory ratio, or "-" where the peer's delta is under 1 MiB (heap and page granularity, not tensors)."""
    return f"{mine / theirs:.3f}" if theirs >= 1.0 else "-"


def main() -> None:
    args = parse_args(sys.argv[1:])
    torch.set_num_threads(1)  # one thread: steadier CPU times on a shared machine
    steps = 2 if args.quick else STEPS
    memory_steps = 1 if args.quick else MEMORY_STEPS
    rows = cases(args)
    import diffusers

    print(f"CPU, torch {torch.__version__}, diffusers {diffusers.__version__}, 1 thread; sd15_text_to_image.json vs "
          f"StableDiffusionPipeline + DDIMScheduler, {steps} steps, CFG {SCALE}; time = median process CPU s")
    header = (f"{'model':<5} {'latent':>6} {'image':>5} {'batch':>5} {'ours s':>8} {'diffusers s':>11} "
              f"{'time ratio':>10} {'spread':>11} {'ours MiB':>8} {'diff. MiB':>9} {'mem ratio':>9} {'max|diff|':>9}")
    print(header, flush=True)
    loads = []
    stub: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for model in dict.fromkeys(c.model for c in rows):
            model_rows = [c for c in rows if c.model == model]
            folder = build(model, Path(tmp) / model)
            out = Path(tmp) / "out"
            shapes = [(pixels(model, c.latent), c.batch) for c in model_rows]
            memory = {side: measure_memory(side, folder, shapes, memory_steps, out) for side in ("ours", "peer")}
            loads.append((model, unet_parameters(folder), memory))
            ours, peer = Ours(folder, out), Peer(folder)
            ours.load()
            peer.load()
            for case in model_rows:
                r = compare(ours, peer, case, steps)
                px = pixels(model, case.latent)
                mine, theirs = (memory[side]["rows"][f"{px}x{case.batch}"] for side in ("ours", "peer"))
                print(f"{model:<5} {case.latent:>4}^2 {px:>5} {case.batch:>5} {r['ours']:>8.3f} {r['peer']:>11.3f} "
                      f"{r['ours'] / r['peer']:>10.3f} {r['lo']:>5.3f}-{r['hi']:<5.3f} {mine:>8.1f} {theirs:>9.1f} "
                      f"{_ratio(mine, theirs):>9} {r['diff']:>9.1e}", flush=True)
            if model == "tiny":
                stub = loop_overhead(ours, peer, pixels(model, 8), 1, steps, 5 if args.quick else 41)
            del ours, peer
    if stub is not None:
        print(f"outside the U-Net (tiny, batch 1, U-Net stubbed): ours {1e3 * stub[0]:.1f} ms, diffusers "
              f"{1e3 * stub[1]:.1f} ms per run")
    print("goal: time ratio <= 1.00, mem ratio <= 1.05 (MiB = peak RSS of one run above the RSS before it; "
          "no ratio below 1 MiB)")
    for model, parameters, memory in loads:
        ours, peer = memory["ours"], memory["peer"]
        print(f"{model}: U-Net {parameters / 1e6:.1f}M parameters; fresh process to model and prompts ready "
              f"(imports included): ours {ours['load_s']:.1f} s, diffusers {peer['load_s']:.1f} s (wall); "
              f"RSS then: ours {ours['loaded_mib']:.0f} MiB, diffusers {peer['loaded_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
