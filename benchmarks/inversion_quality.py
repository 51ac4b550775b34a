"""Inversion on the bundled shapes model: reconstruction error against solver and steps, and what
prompt-to-prompt on a real image keeps.

Images: the shipped input (workflows/inputs/red_circle.png, made by the default workflow) and
`images - 1` held-out procedural shapes (nodes.data.shapes, seed 777: drawn, not generated), each
with its caption as the source prompt.

1. Reconstruction. z = VAE-encode(image); noise = core/invert(field, z, grid, method); z' =
   core/ode_solve(field, noise, grid, method) with the same field, grid and solver. Reported: mean
   MSE(z', z) over the images in latent space (z has std ~1.2), for the conditional field (w = 1) and
   CFG w = 4 with the empty prompt as null, and the NFE of one direction.
2. Real-image prompt-to-prompt (workflows/p2p_real_image.json, 20 Heun steps both ways): word swap of
   the colour word (red -> blue, green -> yellow, blue -> red, yellow -> green). Object region = input
   pixels farther than 0.25 from the border colour, dilated by 2 pixels; everything else is the
   unedited content. Reported for the edit and for plain regeneration of the target prompt from the
   same inverted noise (the edit with empty windows): background MSE between the edited image and the
   reconstruction (images in [0, 1]) outside the region, IoU of the edited object with the input's,
   how often the measured colour is the target colour, and the reconstruction's latent MSE and PSNR
   against the input image (the VAE round trip alone is the floor).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from nodegraph import Context, Session, Workflow
from nodes.data.shapes import COLOURS, make_shapes, measure_shapes
from nodes.fields import BoundField
from nodes.guidance import CFGField
from nodes.image_io import pil_to_tensor, save_png_numbered, tensor_to_pil
from nodes.solve_nodes import invert, ode_solve
from nodes.solvers import BUILTIN_SOLVERS
from nodes.time_grids import uniform_grid

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "workflows" / "p2p_real_image.json"
SHIPPED = ROOT / "workflows" / "inputs" / "red_circle.png"
SHIPPED_PROMPT = "a large red circle at the top left on a gray background"
SWAP = {"red": "blue", "green": "yellow", "blue": "red", "yellow": "green"}
SOLVERS = {solver.name: solver for solver in BUILTIN_SOLVERS}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Options of this benchmark (`argv` None: the command line)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=int, nargs="?", default=8, help="images (the shipped one + held-out shapes)")
    parser.add_argument("--methods", default="euler,heun,rk4,ddim", help="solvers of table 1")
    parser.add_argument("--steps", default="10,20,50", help="steps of table 1")
    parser.add_argument("--p2p-steps", type=int, default=20, help="Heun steps of table 2 (each way)")
    parser.add_argument("--skip-p2p", action="store_true", help="table 1 only")
    return parser.parse_args(argv)


def test_images(count: int) -> tuple[torch.Tensor, list[str]]:
    """(images (count, 3, 32, 32) in [0, 1], captions): the shipped image, then held-out shapes."""
    from PIL import Image

    with Image.open(SHIPPED) as png:
        images, captions = [pil_to_tensor(png.convert("RGB"))], [SHIPPED_PROMPT]
    if count > 1:
        shapes = make_shapes(count - 1, seed=777)
        images.append(((shapes.images + 1) / 2).clamp(0, 1))
        captions += list(shapes.captions)
    return torch.cat(images), captions


def object_region(images: torch.Tensor, threshold: float = 0.25, margin: int = 2) -> torch.Tensor:
    """(B, 1, H, W) True on the object: pixels farther than `threshold` from the border's median colour,
    dilated by `margin` pixels."""
    border = torch.cat([images[:, :, 0], images[:, :, -1], images[:, :, :, 0], images[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    inside = ((images - background).norm(dim=1, keepdim=True) > threshold).float()
    return F.max_pool2d(inside, 2 * margin + 1, stride=1, padding=margin) > 0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).pow(2).mean().clamp_min(1e-12)))


def reconstruction_table(session: Session, images: torch.Tensor, captions: list[str], methods: list[str],
                         steps: list[int]) -> None:
    parts = session.run(Workflow.load(WORKFLOW), outputs=["field", "vae", "text_encoder", "null"])
    field, vae = parts.value("field"), parts.value("vae")
    cond = parts.value("text_encoder").encode(captions)
    null = parts.value("null")
    ctx = Context(node_id="invert", node_type="core/invert")
    with torch.no_grad():
        z = vae.images_to_latents(images)
        floor = psnr(vae.latents_to_images(z), images)
    print(f"{len(captions)} images, latent {tuple(z.shape[1:])}, latent std {float(z.std()):.2f}; "
          f"VAE round trip alone: PSNR {floor:.1f} dB")
    for scale in (1.0, 4.0):
        guided = BoundField(field, cond) if scale == 1.0 else CFGField(field, cond, null, scale)
        which = "no guidance (w = 1)" if scale == 1.0 else f"CFG w = {scale:g}"
        print(f"\nreconstruction MSE in latent space, {which}")
        print(f"{'solver':<10}" + "".join(f"{f'{n} steps':>12}" for n in steps) + f"{'NFE':>16}")
        for method in methods:
            row, nfe = [], []
            for n in steps:
                grid = uniform_grid(n)
                back = invert(ctx, guided, z, grid, SOLVERS[method])
                again = ode_solve(ctx, guided, back.noise, grid, SOLVERS[method])
                row.append(float((again.latent - z).pow(2).mean()))
                nfe.append(str(back.nfe))
            print(f"{method:<10}" + "".join(f"{e:>12.2e}" for e in row) + f"{'/'.join(nfe):>16}", flush=True)


def edit_table(session: Session, images: torch.Tensor, captions: list[str], folder: Path, steps: int) -> None:
    settings = {"w = 1 (inversion and edit)": (1.0, 1.0), "w = 4 (inversion and edit)": (4.0, 4.0),
                "inversion w = 1, edit w = 4": (1.0, 4.0)}
    regions = object_region(images)
    print(f"\nreal-image prompt-to-prompt (word swap of the colour; {steps} Heun steps; cross 0.8, self 0.4)")
    header = ["recon MSE (latent)", "recon PSNR", "bg MSE", "object IoU", "colour hit"]
    print(f"{'':<30}{'':<8}" + "".join(f"{h:>20}" for h in header))
    for label, (invert_scale, edit_scale) in settings.items():
        rows: dict[str, list[list[float]]] = {"p2p": [], "regen": []}
        for index, (image, source) in enumerate(zip(images, captions, strict=True)):
            colour = next(c for c in COLOURS if f" {c} " in f" {source} ")
            target = source.replace(f" {colour} ", f" {SWAP[colour]} ")
            path = save_png_numbered(tensor_to_pil(image[None])[0], folder, f"input{index}")
            w = Workflow.load(WORKFLOW).set("image.path", str(path)).set("source_prompt.value", source)
            w.set("edit.target_prompt", target).set("grid.steps", steps)
            w.set("cfg.scale", invert_scale).set("edit.guidance", edit_scale)
            for name, windows in (("p2p", (0.8, 0.4)), ("regen", (0.0, 0.0))):
                w.set("edit.cross_replace_steps", windows[0]).set("edit.self_replace_steps", windows[1])
                result = session.run(w, outputs=["decode", "solve", "encode"])
                recon, edited = result.value("decode")
                latent, z = result.value("solve.latent")[:1], result.value("encode")
                outside = ~regions[index]
                bg = float(((edited - recon).pow(2) * outside).sum() / (3 * outside.sum()).clamp_min(1))
                want, got = object_region(image[None], margin=0), object_region(edited[None], margin=0)
                iou = float((want & got).sum() / (want | got).sum().clamp_min(1))
                hit = float(int(measure_shapes(edited[None])["colour"]) == list(COLOURS).index(SWAP[colour]))
                rows[name].append([float((latent - z).pow(2).mean()), psnr(recon, image), bg, iou, hit])
        for name in ("p2p", "regen"):
            mean = torch.tensor(rows[name]).mean(0).tolist()
            print(f"{label if name == 'p2p' else '':<30}{name:<8}{mean[0]:>20.2e}{mean[1]:>20.1f}"
                  f"{mean[2]:>20.2e}{mean[3]:>20.2f}{mean[4]:>20.0%}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    images, captions = test_images(max(1, args.images))
    with tempfile.TemporaryDirectory() as scratch:
        session = Session(device="cpu", output_dir=scratch)
        reconstruction_table(session, images, captions, args.methods.split(","),
                             [int(n) for n in args.steps.split(",")])
        if not args.skip_p2p:
            edit_table(session, images, captions, Path(scratch), args.p2p_steps)


if __name__ == "__main__":
    main()
