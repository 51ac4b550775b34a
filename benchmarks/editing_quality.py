"""SDEdit, inpainting and outpainting on the bundled shapes model, through the shipped workflows.

Inputs: procedural shapes (make_shapes, a seed the model was not trained on), each with its caption.
SDEdit: the caption with the shape word swapped (circle -> square -> triangle -> circle); for each
strength, PSNR to the input and how often the measured shape is the new one while position and colour
stay the input's. Inpainting: a centred 16x16 square (4x4 latent cells) repainted with the image's own
caption; PSNR outside the mask (all of it, and at least 4 px from its edge), the same for the plain VAE
reconstruction (the floor any latent method has), and inside; the latents outside must be bit-equal.
Outpainting: 16 px added right and bottom; PSNR of the original area.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from nodegraph import Session, Workflow
from nodes.data.shapes import ATTRIBUTES, make_shapes, measure_shapes

ROOT = Path(__file__).resolve().parent.parent
SWAP = {"circle": "square", "square": "triangle", "triangle": "circle"}


def psnr(a: torch.Tensor, b: torch.Tensor, where: torch.Tensor | None = None) -> float:
    """10 log10(1 / MSE) over the pixels where `where` (H, W) is true (all pixels if None), images in [0, 1]."""
    error = (a - b).pow(2).mean(dim=1)  # (B, H, W)
    mse = float(error[:, where].mean() if where is not None else error.mean())
    return 10 * math.log10(1 / max(mse, 1e-12))


def with_dataset(name: str, count: int, seed: int, prompts: list[str], steps: int,
                 mask_file: Path | None = None) -> Workflow:
    """A shipped shapes workflow whose image node is replaced by `count` procedural shapes (and, for the
    inpainting one, whose mask is read from `mask_file`)."""
    data = Workflow.load(ROOT / "workflows" / name).model_dump(mode="json", by_alias=True, exclude_none=True)
    nodes = data["nodes"]
    nodes["shapes"] = {"type": "core/shapes_dataset", "inputs": {"count": count, "seed": seed}}
    nodes["image"] = {"type": "core/dataset_images", "inputs": {"dataset": {"from": "shapes", "output": "dataset"},
                                                                 "count": count}}
    if mask_file is not None:
        nodes["painted"] = {"type": "core/load_image", "inputs": {"path": str(mask_file)}}
        nodes["mask"] = {"type": "core/image_to_mask", "inputs": {"images": {"from": "painted", "output": "image"}}}
        nodes["inpaint"]["inputs"]["mask"] = {"from": "mask", "output": "mask"}
    nodes["prompt"]["inputs"]["text"] = "\n".join(prompts)
    nodes["grid"]["inputs"]["steps"] = steps
    return Workflow.model_validate(data)


def sdedit(session: Session, count: int, seed: int, steps: int) -> None:
    shapes = make_shapes(count, seed)
    names = [shapes.attribute_names(i) for i in range(count)]
    targets = [caption.replace(n["shape"], SWAP[n["shape"]]) for caption, n in zip(shapes.captions, names, strict=True)]
    wanted = torch.tensor([ATTRIBUTES["shape"].index(SWAP[n["shape"]]) for n in names])
    print("SDEdit: strength | PSNR to input (dB) | new shape | position kept | colour kept | all three")
    for strength in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        w = with_dataset("shapes_sdedit.json", count, seed, targets, steps).set("start_grid.strength", strength)
        result = session.run(w, outputs=["decode", "image"])
        out, given = result.value("decode"), result.value("image")
        got = measure_shapes(out)
        shape = got["shape"] == wanted
        position = got["position"] == shapes.attributes["position"]
        colour = got["colour"] == shapes.attributes["colour"]
        print(f"| {strength:.1f} | {psnr(out, given):.1f} | {shape.float().mean():.2f} | "
              f"{position.float().mean():.2f} | {colour.float().mean():.2f} | "
              f"{(shape & position & colour).float().mean():.2f} |")


def inpainting(session: Session, count: int, seed: int, steps: int, folder: Path) -> None:
    shapes = make_shapes(count, seed)
    captions = list(shapes.captions)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 8:24] = True
    far = torch.ones(32, 32, dtype=torch.bool)
    far[4:28, 4:28] = False
    cells = torch.ones(8, 8, dtype=torch.bool)
    cells[2:6, 2:6] = False
    mask_file = folder / "centre_mask.png"
    Image.fromarray(mask.to(torch.uint8).numpy() * 255, "L").save(mask_file)
    reconstruction = session.run(with_dataset("shapes_sdedit.json", count, seed, captions, steps)
                                 .set("start_grid.strength", 0.0), outputs=["decode", "image"])
    rec, given = reconstruction.value("decode"), reconstruction.value("image")
    print(f"| VAE reconstruction (the floor) | - | {psnr(rec, given, ~mask):.1f} | {psnr(rec, given, far):.1f} | "
          f"{psnr(rec, given, mask):.1f} |")
    for mode in ("replace", "differential"):
        w = with_dataset("shapes_inpaint.json", count, seed, captions, steps, mask_file).set("inpaint.mode", mode)
        result = session.run(w, outputs=["decode", "image", "encode", "solve"])
        out, given, z, x = (result.value(k) for k in ("decode", "image", "encode", "solve.latent"))
        bit_equal = torch.equal(x[..., cells], z[..., cells])
        print(f"| inpainting, {mode} | {bit_equal} | {psnr(out, given, ~mask):.1f} | {psnr(out, given, far):.1f} | "
              f"{psnr(out, given, mask):.1f} |")
    result = session.run(with_dataset("shapes_outpaint.json", count, seed, captions, steps),
                         outputs=["decode", "image", "encode", "solve", "vae"])
    out, given, z, x = (result.value(k) for k in ("decode", "image", "encode", "solve.latent"))
    with torch.no_grad():
        padded = result.value("vae").latents_to_images(z)[..., :32, :32]
    bit_equal = torch.equal(x[..., :8, :8], z[..., :8, :8])
    inner = torch.zeros(32, 32, dtype=torch.bool)
    inner[:28, :28] = True
    print(f"| VAE reconstruction of the padded canvas (original area) | - | {psnr(padded, given):.1f} | "
          f"{psnr(padded, given, inner):.1f} | - |")
    print(f"| outpainting 32 -> 48 (original area) | {bit_equal} | {psnr(out[..., :32, :32], given):.1f} | "
          f"{psnr(out[..., :32, :32], given, inner):.1f} | - |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=48, help="images")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the procedural shapes")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        session = Session(device="cpu", read_roots=[ROOT, folder])
        sdedit(session, args.count, args.seed, args.steps)
        print("| run | latents outside bit-equal | PSNR outside (dB) | >= 4 px from the mask | inside |")
        inpainting(session, args.count, args.seed, args.steps, Path(folder))


if __name__ == "__main__":
    main()
