"""SDEdit, inpainting and outpainting on the shipped shapes model, the digits pixel model and a tiny SD 1.5
folder: the identities (strength 0 returns the input, strength 1 is text-to-image from the same noise, the
kept region ends bit-equal on the original), and equality with diffusers' img2img and inpainting pipelines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from nodegraph import Session, Workflow
from nodes.editing import KnownRegion, fit_mask, inpainting_solver, noise_to_time, truncate_grid
from nodes.fields import ModelField
from nodes.image_io import paint_mask, read_mask
from nodes.image_ops import image_to_mask, image_to_pixels, pad_image, resize_image
from nodes.paths import CondOTPath, CosinePath
from nodes.schedules import DiscreteDDPMPath, RectifiedFlowPath, ddpm_grid, flow_grid
from nodes.solvers import BUILTIN_SOLVERS
from nodes.time_grids import shift_times, uniform_grid

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
INPUT = WORKFLOWS / "inputs" / "shapes_red_circle.png"
MASK = WORKFLOWS / "inputs" / "shapes_mask.png"
PROMPT = "a photo of the red cat"
SEED = 3


@pytest.fixture(scope="module")
def session(builtin_registry, tmp_path_factory) -> Session:
    return Session(builtin_registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                   read_roots=[ROOT, tmp_path_factory.getbasetemp()])


def shapes(name: str, steps: int = 8, **settings) -> Workflow:
    w = Workflow.load(WORKFLOWS / name).set("grid.steps", steps)
    w = w.set("image.path", str(INPUT))
    for address, value in settings.items():
        w = w.set(address, value)
    return w


def add_nodes(workflow: Workflow, nodes: dict, **relinks) -> Workflow:
    """The workflow with extra nodes and some inputs relinked ({"node.input": link})."""
    data = workflow.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["nodes"].update(nodes)
    for address, link in relinks.items():
        node, name = address.split("__")
        data["nodes"][node]["inputs"][name] = link
    return Workflow.model_validate(data)


def mask_file(folder: Path, name: str, values: torch.Tensor) -> Path:
    """A grey PNG from an (H, W) tensor in [0, 1]."""
    path = folder / name
    Image.fromarray((values.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), "L").save(path)
    return path


# ---------------------------------------------------------------------------------------------- grids


@pytest.mark.parametrize("grid", [uniform_grid(10), shift_times(uniform_grid(12), 3.0),
                                  ddpm_grid(DiscreteDDPMPath(), 20), flow_grid(RectifiedFlowPath(shift=3.0), 9)],
                         ids=["uniform", "shifted", "ddpm", "flow"])
def test_truncate_grid_starts_at_t0_and_keeps_the_grid_after_it(grid):
    for strength in (0.25, 0.6, 0.9):
        cut = truncate_grid(grid, strength, "time")
        t0 = max(1 - strength, float(grid[0]))
        assert float(cut[0]) == t0
        torch.testing.assert_close(cut[1:], grid[grid > t0 + 1e-9], rtol=0, atol=0)
        steps = truncate_grid(grid, strength, "steps")
        kept = int((grid.numel() - 1) * strength)
        torch.testing.assert_close(steps, grid[grid.numel() - 1 - kept:], rtol=0, atol=0)
    assert truncate_grid(grid, 0.0, "time").tolist() == [1.0] == truncate_grid(grid, 0.0, "steps").tolist()
    assert torch.equal(truncate_grid(grid, 1.0, "steps"), grid)
    if float(grid[0]) == 0.0:
        assert torch.equal(truncate_grid(grid, 1.0, "time"), grid)


def test_truncate_grid_with_too_little_strength_for_a_step_returns_no_step():
    assert truncate_grid(uniform_grid(4), 0.2, "steps").tolist() == [1.0]  # int(4 * 0.2) = 0 steps
    assert truncate_grid(torch.tensor([0.0, 0.5, 0.9], dtype=torch.float64), 0.05).tolist() == [1.0]
    with pytest.raises(ValueError, match="strength"):
        truncate_grid(uniform_grid(4), 1.5)


def test_noise_to_time_is_the_path_sample_and_t1_is_the_input_itself():
    z, eps = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for path in (CondOTPath(), CosinePath(), DiscreteDDPMPath()):
        assert torch.equal(noise_to_time(path, z, eps, 1.0), z)
        t = torch.tensor(0.3, dtype=torch.float64)
        want = path.alpha(t).float() * z + path.beta(t).float() * eps
        torch.testing.assert_close(noise_to_time(path, z, eps, 0.3), want)
    assert torch.equal(noise_to_time(CondOTPath(), z, eps, 0.0), eps)  # alpha_0 = 0, beta_0 = 1
    batch = noise_to_time(CondOTPath(), z[:1], torch.randn(5, 3, 4, 4), 0.5)
    assert batch.shape == (5, 3, 4, 4)


# ---------------------------------------------------------------------------------------------- masks and images


def test_fit_mask_area_nearest_and_max():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :2] = 1
    assert fit_mask(mask, (2, 2), "area")[0, 0].tolist() == [[0.5, 0.0], [0.0, 0.0]]
    assert fit_mask(mask, (2, 2), "max")[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert fit_mask(mask, (4, 4), "nearest")[0, 0, :, 0].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert fit_mask(torch.ones(1, 3, 8, 8), (8, 8)).shape == (1, 1, 8, 8)


def test_pad_image_keeps_the_original_and_masks_the_new_area():
    image = torch.rand(1, 3, 6, 5)
    padded, mask = pad_image(image, left=2, right=1, top=3, bottom=0, fill="constant", value=0.25)
    assert padded.shape == (1, 3, 9, 8) and mask.shape == (1, 1, 9, 8)
    assert torch.equal(padded[..., 3:, 2:7], image)
    assert mask[..., 3:, 2:7].sum() == 0 and mask.sum() == 9 * 8 - 6 * 5
    assert torch.all(padded[..., :3, :] == 0.25)
    edge, _ = pad_image(image, right=2, fill="edge")
    assert torch.equal(edge[..., -1], image[..., -1])
    with pytest.raises(ValueError, match="reflect"):
        pad_image(image, left=9, fill="reflect")


def test_image_to_mask_channels_and_image_to_pixels():
    image = torch.zeros(1, 4, 2, 2)
    image[0, 0] = 1.0
    image[0, 3, 0] = 1.0
    torch.testing.assert_close(image_to_mask(image, "luminance"), torch.full((1, 1, 2, 2), 0.299))
    assert image_to_mask(image, "alpha")[0, 0].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert image_to_mask(image, "red", invert=True).sum() == 0
    assert image_to_mask(image, "luminance", threshold=0.2).sum() == 4
    assert torch.equal(image_to_pixels(image, "rgb"), image[:, :3] * 2 - 1)
    assert image_to_pixels(image, "grey").shape == (1, 1, 2, 2)
    assert resize_image(torch.rand(2, 3, 8, 8), 4, 6).shape == (2, 3, 6, 4)


class _Ctx:
    device = "cpu"


def test_paint_mask_reads_the_painted_png_and_no_mask_keeps_everything(tmp_path):
    values = torch.zeros(16, 16)
    values[2:9, 3:12] = 1.0
    painted = mask_file(tmp_path, "m.png", values)
    image, mask = paint_mask(_Ctx(), str(INPUT), str(painted))
    assert image.shape == (1, 3, 32, 32) and mask.shape == (1, 1, 32, 32)  # resized to the image
    assert mask[0, 0, 5:17, 7:23].min() > 0.99 and mask[0, 0, 19:].max() == 0
    _, nothing = paint_mask(_Ctx(), str(INPUT))
    assert nothing.shape == (1, 1, 32, 32) and nothing.sum() == 0
    transparent = tmp_path / "a.png"
    Image.new("LA", (4, 4), (255, 0)).save(transparent)
    assert read_mask(transparent, (4, 4)).sum() == 0  # alpha 0 paints nothing


# ---------------------------------------------------------------------------------------------- shapes: SDEdit


def test_sdedit_strength_0_returns_the_input(session):
    w = shapes("shapes_sdedit.json", **{"start_grid.strength": 0.0})
    result = session.run(w, outputs=["solve", "encode", "decode", "image"])
    assert torch.equal(result.value("solve.latent"), result.value("encode"))  # latent level: exactly
    assert result.value("solve.nfe") == 0
    reconstruction = (result.value("decode") - result.value("image")).pow(2).mean()
    assert float(reconstruction) < 2e-3  # image level: what the VAE gives back


def test_sdedit_strength_1_equals_text_to_image_from_the_same_noise(session):
    w = shapes("shapes_sdedit.json", **{"start_grid.strength": 1.0})
    w = add_nodes(w, {
        "eps": {"type": "core/noise", "inputs": {"shape": [2, 4, 8, 8], "seed": 5}},
        "t2i": {"type": "core/ode_solve", "inputs": {"field": {"from": "cfg", "output": "vector_field"},
                                                     "noise": {"from": "eps", "output": "latent"},
                                                     "grid": {"from": "grid", "output": "time_grid"}}},
    }, start__noise={"from": "eps", "output": "latent"})
    result = session.run(w, outputs=["solve", "t2i"])
    assert torch.equal(result.value("solve.latent"), result.value("t2i.latent"))
    partial = session.run(w.set("start_grid.strength", 0.5), outputs=["solve"]).value("solve.latent")
    assert not torch.allclose(partial, result.value("t2i.latent"), atol=1e-3)


def test_sdedit_change_grows_with_strength(session):
    w = shapes("shapes_sdedit.json")
    base = session.run(w.set("start_grid.strength", 0.0), outputs=["solve"]).value("solve.latent")
    change = [float((session.run(w.set("start_grid.strength", s), outputs=["solve"]).value("solve.latent") - base)
                    .abs().mean()) for s in (0.2, 0.5, 0.9)]
    assert change[0] < change[1] < change[2]


# ---------------------------------------------------------------------------------------------- shapes: inpainting


def inpaint_run(session, w: Workflow, mask: Path, **settings) -> dict:
    w = w.set("image.mask", str(mask))
    for address, value in settings.items():
        w = w.set(address, value)
    result = session.run(w, outputs=["solve", "encode", "image"])
    return {"x": result.value("solve.latent"), "z": result.value("encode"), "mask": result.value("image.mask")}


@pytest.mark.parametrize("method", [s.name for s in BUILTIN_SOLVERS])
def test_inpainting_keeps_the_unmasked_latents_bit_equal_and_repaints_the_masked(session, method):
    got = inpaint_run(session, shapes("shapes_inpaint.json", steps=4), MASK, **{"inpaint.method": method})
    repaint = fit_mask(got["mask"], (8, 8), "area")[0, 0]
    keep = repaint == 0
    assert keep.sum() == 64 - 25  # the 20x20 painted pixels are 5x5 latent cells of the 4x VAE
    assert torch.equal(got["x"][..., keep], got["z"][..., keep])
    assert float((got["x"][..., repaint == 1] - got["z"][..., repaint == 1]).abs().mean()) > 0.3


def test_inpainting_trajectory_and_progress_step_through_the_grid(session):
    w = shapes("shapes_inpaint.json", steps=5, **{"solve.keep_trajectory": True, "inpaint.method": "heun"})
    result = session.run(w.set("image.mask", str(MASK)), outputs=["solve"])
    assert result.value("solve.trajectory").shape[0] == 6
    assert result.value("solve.nfe") == 10  # heun: two evaluations per interval


def test_inpainting_with_an_empty_mask_returns_the_input_and_a_full_mask_is_text_to_image(session, tmp_path):
    w = shapes("shapes_inpaint.json", steps=4)
    empty = inpaint_run(session, w, mask_file(tmp_path, "empty.png", torch.zeros(32, 32)))
    assert torch.equal(empty["x"], empty["z"])
    full = inpaint_run(session, w, mask_file(tmp_path, "full.png", torch.ones(32, 32)))
    plain = session.run(w.set("solve.method", "euler"), outputs=["solve"]).value("solve.latent")
    torch.testing.assert_close(full["x"], plain, atol=1e-6, rtol=1e-6)


def test_differential_mask_is_a_per_pixel_strength(session, tmp_path):
    """A uniform differential mask m is SDEdit with strength m (t0 = 1 - m on the grid); more mask, more
    change; in a two-valued mask the 0 part is kept exactly and the other part is SDEdit at its value."""
    w = shapes("shapes_inpaint.json", steps=10, **{"inpaint.mode": "differential", "start_grid.strength": 1.0})
    sdedit = shapes("shapes_sdedit.json", steps=10, **{"prompt.text": "a large blue square at the top left on a "
                                                                      "white background"})
    sdedit = add_nodes(sdedit, {}, start__noise={"from": "eps", "output": "latent"})
    sdedit = add_nodes(sdedit, {"eps": {"type": "core/noise", "inputs": {"shape": [1, 4, 8, 8], "seed": 0}}})
    w = add_nodes(w, {"eps": {"type": "core/noise", "inputs": {"shape": [1, 4, 8, 8], "seed": 0}}},
                  start__noise={"from": "eps", "output": "latent"})
    changes = []
    for value in (0.2, 0.6, 0.8, 1.0):  # multiples of 1/255: exact in the 8-bit PNG
        got = inpaint_run(session, w, mask_file(tmp_path, f"m{value}.png", torch.full((32, 32), value)))
        changes.append(float((got["x"] - got["z"]).abs().mean()))
        if value == 0.6:
            want = session.run(sdedit.set("start_grid.strength", 0.6), outputs=["solve"]).value("solve.latent")
            torch.testing.assert_close(got["x"], want, atol=1e-6, rtol=1e-6)
    assert changes[0] < changes[1] < changes[2] < changes[3]
    halves = torch.zeros(32, 32)
    halves[:, 16:] = 0.6
    got = inpaint_run(session, w, mask_file(tmp_path, "halves.png", halves))
    assert torch.equal(got["x"][..., :4], got["z"][..., :4])
    assert float((got["x"][..., 4:] - got["z"][..., 4:]).abs().mean()) > 0.05


def test_outpainting_keeps_the_original_area(session):
    w = shapes("shapes_outpaint.json", steps=6)
    result = session.run(w, outputs=["solve", "encode", "decode", "image", "pad"])
    x, z = result.value("solve.latent"), result.value("encode")
    assert x.shape == (1, 4, 12, 12)
    assert torch.equal(x[..., :8, :8], z[..., :8, :8])  # the 32x32 original is the top-left 8x8 latent cells
    assert not torch.allclose(x[..., 8:, :], z[..., 8:, :], atol=0.1)
    decoded = result.value("decode")[..., :32, :32]
    inside = (decoded[..., 4:28, 4:28] - result.value("image")[..., 4:28, 4:28]).pow(2).mean()
    assert float(inside) < 5e-3  # away from the seam, the original comes back as the VAE gives it


# ---------------------------------------------------------------------------------------------- digits (pixel model)


def digits_workflow(**solve_inputs) -> Workflow:
    link = lambda node, output: {"from": node, "output": output}  # noqa: E731
    nodes = {
        "model": {"type": "core/bundled_backbone", "inputs": {"name": "digits_cfg_unet"}},
        "path": {"type": "core/path", "inputs": {"kind": "cond_ot"}},
        "field": {"type": "core/model_field", "inputs": {"backbone": link("model", "backbone"),
                                                         "path": link("path", "path")}},
        "label": {"type": "core/class_condition", "inputs": {"label": 3}},
        "bound": {"type": "core/condition_field", "inputs": {"field": link("field", "vector_field"),
                                                             "conditioning": link("label", "conditioning")}},
        "data": {"type": "core/digits_dataset", "inputs": {}},
        "digit": {"type": "core/dataset_images", "inputs": {"dataset": link("data", "dataset"), "count": 1}},
        "pixels": {"type": "core/image_to_pixels", "inputs": {"images": link("digit", "image"), "channels": "grey"}},
        "grid": {"type": "core/uniform_grid", "inputs": {"steps": 6}},
        "start_grid": {"type": "core/truncate_grid", "inputs": {"grid": link("grid", "time_grid"), "strength": 0.7}},
        "start": {"type": "core/noise_to_time", "inputs": {"path": link("path", "path"),
                                                           "latents": link("pixels", "latent"),
                                                           "grid": link("start_grid", "time_grid")}},
        "solve": {"type": "core/ode_solve", "inputs": {"field": link("bound", "vector_field"),
                                                       "noise": link("start", "latent"),
                                                       "grid": link("start_grid", "time_grid"), **solve_inputs}},
    }
    return Workflow.model_validate({"format": "nodegraph/workflow", "version": 1, "nodes": nodes})


def test_pixel_model_sdedit_and_inpainting(session, tmp_path):
    w = digits_workflow()
    zero = session.run(w.copy_deep().set("start_grid.strength", 0.0), outputs=["solve", "pixels"])
    assert torch.equal(zero.value("solve.latent"), zero.value("pixels"))
    edited = session.run(w, outputs=["solve", "pixels"]).value("solve.latent")
    assert edited.shape == (1, 1, 16, 16) and float((edited - zero.value("pixels")).abs().mean()) > 0.05
    half = torch.zeros(16, 16)
    half[8:] = 1.0
    w = add_nodes(w, {
        "painted": {"type": "core/load_image", "inputs": {"path": str(mask_file(tmp_path, "half.png", half))}},
        "mask": {"type": "core/image_to_mask", "inputs": {"images": {"from": "painted", "output": "image"}}},
        "inpaint": {"type": "core/inpaint_solver", "inputs": {"latents": {"from": "pixels", "output": "latent"},
                                                              "mask": {"from": "mask", "output": "mask"},
                                                              "noise": {"from": "start", "output": "noise"},
                                                              "method": "rk4"}},
    }, solve__method={"from": "inpaint", "output": "solver"})
    result = session.run(w, outputs=["solve", "pixels"])
    x, z = result.value("solve.latent"), result.value("pixels")
    assert torch.equal(x[..., :8, :], z[..., :8, :])
    assert float((x[..., 8:, :] - z[..., 8:, :]).abs().mean()) > 0.05


def test_inpainting_solver_runs_without_the_graph():
    """The wrapper is a plain SOLVER: any registered solver inside, any field with a path outside."""
    torch.manual_seed(0)
    field = ModelField(lambda x, t, cond: -x, CondOTPath())
    z, eps = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 2:, :] = 1
    solver = inpainting_solver(BUILTIN_SOLVERS[0], KnownRegion(z, eps, mask))
    out = solver(field, eps.clone(), uniform_grid(3))
    assert torch.equal(out[..., :2, :], z[..., :2, :])
    with pytest.raises(ValueError, match="mask"):
        KnownRegion(z, eps, torch.zeros(1, 1, 3, 3))


# ---------------------------------------------------------------------------------------------- SD 1.5


def sd15(name: str, folder: Path, steps: int, strength: float, **settings) -> Workflow:
    w = Workflow.load(WORKFLOWS / name)
    values = {"model.path": str(folder), "image.path": str(INPUT), "resize.width": 16, "resize.height": 16,
              "grid.steps": steps, "start_grid.strength": strength, "seed.seed": SEED, "prompt.text": PROMPT,
              "cfg.scale": 5.0, **settings}
    for address, value in values.items():
        w = w.set(address, value)
    return w


def sd_pipeline(cls, folder: Path):
    from diffusers import DDIMScheduler

    pipe = cls.from_pretrained(folder, local_files_only=True, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("strength", [0.5, 0.8, 1.0])
def test_sd15_img2img_equals_diffusers_img2img_pipeline(session, sd15_folder, strength):
    """diffusers' img2img samples its VAE posterior; given 4-channel latents it takes them as they are, so
    both sides start from our encoder's mean. Its noise is the first CPU draw of the seed, as ours."""
    from diffusers import StableDiffusionImg2ImgPipeline

    result = session.run(sd15("sd15_img2img.json", sd15_folder, 6, strength), outputs=["solve", "encode"])
    pipe = sd_pipeline(StableDiffusionImg2ImgPipeline, sd15_folder)
    want = pipe(PROMPT, image=result.value("encode"), strength=strength, num_inference_steps=6, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    torch.testing.assert_close(result.value("solve.latent"), want, atol=1e-4, rtol=1e-4)


def test_sd15_inpainting_equals_diffusers_inpaint_pipeline_with_a_plain_unet(session, sd15_folder, tmp_path):
    from diffusers import StableDiffusionInpaintPipeline

    painted = torch.zeros(32, 32)
    painted[:, 16:] = 1.0  # the right half: whole latent columns at any resize
    w = sd15("sd15_inpaint.json", sd15_folder, 6, 0.5).set("image.mask", str(mask_file(tmp_path, "r.png", painted)))
    result = session.run(w, outputs=["solve", "encode", "image"])
    x, z = result.value("solve.latent"), result.value("encode")
    assert torch.equal(x[..., :4], z[..., :4]) and not torch.allclose(x[..., 4:], z[..., 4:], atol=1e-3)
    pipe = sd_pipeline(StableDiffusionInpaintPipeline, sd15_folder)
    want = pipe(PROMPT, image=z, mask_image=result.value("image.mask"), masked_image_latents=z, height=16, width=16,
                strength=0.5, num_inference_steps=6, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    torch.testing.assert_close(x, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mode", ["replace", "differential"])
def test_every_editing_node_runs_on_sd15(session, sd15_folder, mode):
    w = sd15("sd15_inpaint.json", sd15_folder, 3, 1.0, **{"inpaint.mode": mode, "inpaint.resize": "area"})
    w = add_nodes(w, {"outpaint": {"type": "core/pad_image", "inputs": {
        "images": {"from": "image", "output": "image"}, "left": 8, "right": 8}}},
        resize__images={"from": "outpaint", "output": "image"},
        inpaint__mask={"from": "outpaint", "output": "mask"})
    result = session.run(w, outputs=["solve", "encode", "decode"])
    x, z = result.value("solve.latent"), result.value("encode")
    assert torch.isfinite(x).all() and result.value("decode").shape == (1, 3, 16, 16)
    assert torch.equal(x[..., 3:5], z[..., 3:5])  # the middle of the 48-wide canvas is the original
