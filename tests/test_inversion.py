"""Inversion: the registered solvers integrate backwards (data at t = 1 to noise at t = 0); regenerating
from the inverted noise reconstructs the data; real-image prompt-to-prompt starts from that noise."""

import math
from pathlib import Path

import pytest
import torch

from nodegraph import Context, Session, Workflow
from nodes.fields import BoundField, VectorField
from nodes.paths import CondOTPath, CosinePath
from nodes.sigma import SigmaSchedule
from nodes.solve_nodes import dopri5_solver, invert, ode_solve
from nodes.solvers import BUILTIN_SOLVERS, euler_maruyama
from nodes.time_grids import uniform_grid
from nodes.toy import GaussianMixture, GMMField

SOLVERS = {solver.name: solver for solver in BUILTIN_SOLVERS}
ROOT = Path(__file__).resolve().parent.parent
CTX = Context(node_id="invert", node_type="core/invert")


class LinearField(VectorField):
    """dx/dt = cos(t) x, solved by x(t) = x(0) exp(sin t)."""

    def __call__(self, x, t, cond=None):
        return torch.cos(t)[:, None] * x


@pytest.mark.parametrize("method", ["euler", "heun", "midpoint", "rk4", "dopri5"])
def test_every_solver_integrates_backwards_on_a_decreasing_grid(method):
    start = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    data = start * math.exp(math.sin(1.0))
    errors = []
    for steps in (8, 16):
        back = SOLVERS[method](LinearField(), data, uniform_grid(steps).flip(0))
        errors.append(float((back - start).abs().max()))
    assert errors[1] < errors[0] < 0.1 or errors[1] < 1e-6  # converges (dopri5: at its tolerance already)
    assert errors[1] < {"euler": 0.05, "heun": 1e-3, "midpoint": 1e-3, "rk4": 1e-6, "dopri5": 1e-3}[method]


def test_invert_node_runs_the_sampling_grid_backwards_and_counts_evaluations():
    data = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    grid = uniform_grid(4)
    out = invert(CTX, LinearField(), data, grid, SOLVERS["heun"], keep_trajectory=True)
    assert out.nfe == 8 and out.trajectory.shape == (5, 1, 2)
    assert torch.equal(out.trajectory[0], data) and torch.equal(out.trajectory[-1], out.noise)
    for i, t in enumerate(grid.flip(0).tolist()):  # data first, then every grid time down to t = 0
        torch.testing.assert_close(out.trajectory[i], data * math.exp(math.sin(t) - math.sin(1.0)),
                                   rtol=1e-2, atol=1e-2)
    again = ode_solve(CTX, LinearField(), out.noise, grid, SOLVERS["heun"])
    torch.testing.assert_close(again.latent, data, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="strictly increasing"):
        invert(CTX, LinearField(), data, grid.flip(0), SOLVERS["euler"])


def test_euler_maruyama_refuses_to_run_backwards():
    field = GMMField(GaussianMixture(torch.zeros(1, 2), torch.ones(1)), CondOTPath())
    with pytest.raises(ValueError, match="forward in time only"):
        euler_maruyama(field, torch.zeros(3, 2), uniform_grid(4).flip(0), sigma=SigmaSchedule("beta"))


@pytest.mark.parametrize("path", [CondOTPath(), CosinePath()], ids=["cond_ot", "cosine"])
@pytest.mark.parametrize("method", ["euler", "heun", "rk4", "ddim"])
def test_inverting_a_gaussian_with_its_exact_field_returns_the_analytic_noise(path, method):
    """Data z ~ N(m, s^2 I): the probability-flow map is x_t = alpha_t m + sqrt(alpha_t^2 s^2 + beta_t^2)
    (z - m) / s, so the noise of a data point z is exactly (z - m) / s; solvers reach it up to their error."""
    mean, std = torch.tensor([[1.5, -0.5]], dtype=torch.float64), 0.5
    field = GMMField(GaussianMixture(mean, torch.tensor([std], dtype=torch.float64)), path)
    data = mean + std * torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    analytic = (data - mean) / std
    errors = [float((invert(CTX, field, data, uniform_grid(n), SOLVERS[method]).noise - analytic).abs().max())
              for n in (10, 20, 40)]
    assert errors[2] < errors[1] < errors[0]
    order = math.log2(errors[1] / errors[2])
    assert order > {"euler": 0.8, "ddim": 0.8, "heun": 1.7, "rk4": 3.0}[method]
    tight = invert(CTX, field, data, uniform_grid(4), dopri5_solver(rtol=1e-9, atol=1e-9)).noise
    torch.testing.assert_close(tight, analytic, rtol=1e-6, atol=1e-6)


# --- the bundled shapes model and the real-image workflow ---------------------------------------

WORKFLOW = ROOT / "workflows" / "p2p_real_image.json"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Session(device="cpu", output_dir=tmp_path_factory.mktemp("inversion_out"), read_roots=[ROOT])


def real_image_workflow(steps: int = 3) -> Workflow:
    image = ROOT / "workflows" / "inputs" / "red_circle.png"
    return Workflow.load(WORKFLOW).set("image.path", str(image)).set("grid.steps", steps)


@pytest.fixture(scope="module")
def shapes(session):
    """The shipped image's latents and the shapes model's field bound to the source prompt."""
    parts = session.run(real_image_workflow(), outputs=["encode", "field", "prompt"])
    return parts.value("encode"), BoundField(parts.value("field"), parts.value("prompt"))


def _round_trip(field, latents, method: str, steps: int) -> float:
    noise = invert(CTX, field, latents, uniform_grid(steps), SOLVERS[method]).noise
    again = ode_solve(CTX, field, noise, uniform_grid(steps), SOLVERS[method]).latent
    return float((again - latents).pow(2).mean())


def test_reconstruction_error_falls_with_steps_and_heun_beats_euler(shapes):
    latents, field = shapes
    euler_errors = [_round_trip(field, latents, "euler", n) for n in (3, 6)]
    heun_errors = [_round_trip(field, latents, "heun", n) for n in (3, 6)]
    assert euler_errors[1] < euler_errors[0] and heun_errors[1] < heun_errors[0]
    assert heun_errors[0] < euler_errors[0] and heun_errors[1] < euler_errors[1]
    assert heun_errors[1] < 1e-2 * float(latents.var())


def test_real_image_p2p_source_is_the_reconstruction_and_empty_windows_give_plain_regeneration(session, shapes):
    """The source half of the edit is never edited: it equals plain regeneration from the inverted noise
    (and so reconstructs the image); with empty windows the target half equals plain regeneration of the
    target prompt from that noise."""
    latents, _ = shapes
    edited = session.run(real_image_workflow(), outputs=["solve", "invert", "cfg", "grid", "decode", "save"])
    noise, cfg, grid = edited.value("invert.noise"), edited.value("cfg"), edited.value("grid")
    regenerated = ode_solve(CTX, cfg, noise, grid, SOLVERS["heun"]).latent
    source, target = edited.value("solve.latent")
    torch.testing.assert_close(source[None], regenerated, rtol=1e-5, atol=1e-5)
    assert float((source - latents).pow(2).mean()) < 0.05 * float(latents.var())
    assert float((target - source).abs().mean()) > 0.05  # red -> blue changed the target
    assert edited.value("decode").shape == (2, 3, 32, 32) and len(edited["save"]["paths"]) == 1

    empty = real_image_workflow().set("edit.cross_replace_steps", 0.0).set("edit.self_replace_steps", 0.0)
    plain = session.run(empty, outputs=["solve", "field", "text_encoder", "edit"])
    assert "invert" not in plain.ran  # the same inversion, from the cache
    target_prompt = empty.nodes["edit"].inputs["target_prompt"]
    target_field = BoundField(plain.value("field"), plain.value("text_encoder").encode([target_prompt]))
    target = ode_solve(CTX, target_field, noise, grid, SOLVERS["heun"]).latent
    torch.testing.assert_close(plain.value("solve.latent"), torch.cat([regenerated, target]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["sd15", "sd3"])
def test_inversion_on_tiny_sd_family_models_reconstructs_with_their_own_grid(family, request):
    """core/invert on a diffusers model (SD1.5: DDPM path, epsilon; SD3: rectified flow) with its own
    scheduler's grid: inverse DDIM / Euler back, then forward, comes back closer to the latents with more
    steps (random weights: the numbers measure the solver, not a trained model)."""
    from nodes.families.family import BUILTIN_FAMILIES, load_pipeline
    from nodes.fields import ModelField
    from nodes.schedules import model_grid

    folder = request.getfixturevalue(f"{family}_folder")
    parts = load_pipeline(str(folder), {f.name: f for f in BUILTIN_FAMILIES}, torch.float32, "cpu")
    field = BoundField(ModelField(parts.backbone, parts.path, parts.backbone.prediction),
                       parts.text_encoder.encode(["a photo of the red cat"]))
    channels = 4 if family == "sd15" else parts.backbone.model.config.in_channels
    latents = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(3))
    method = SOLVERS["ddim" if family == "sd15" else "euler"]
    errors = []
    for steps in (10, 40):
        grid = model_grid(parts.path, steps).to(torch.float32)
        grid = torch.cat([grid[:-1], torch.ones(1)]) if family == "sd15" else grid  # end on clean data
        found = invert(CTX, field, latents, grid, method)
        assert found.nfe == steps and float((found.noise - latents).abs().mean()) > 0.1  # moved away from the data
        again = ode_solve(CTX, field, found.noise, grid, method).latent
        errors.append(float((again - latents).pow(2).mean()))
    assert errors[1] < errors[0]
    if family == "sd3":  # a random-weight epsilon U-Net is far from smooth: inverse DDIM only improves there
        assert errors[0] < 0.5 * float(latents.var())


# --- a tiny SD 1.x pipeline (random weights, epsilon prediction, DDPM path, model grid) ---------------

SD_PROMPT = "a red fox"


def _link(source: str, output: str) -> dict[str, str]:
    return {"from": source, "output": output}


def sd15_inversion_workflow(folder: Path, image: Path, steps: int, scale: float) -> Workflow:
    """The shipped SD 1.x workflow starting from an image: load, VAE-encode, core/invert with the sampler's
    own field (CFG), grid (the model's) and method (ddim), then regenerate from the found noise."""
    data = Workflow.load(ROOT / "workflows" / "sd15_text_to_image.json").to_dict()
    nodes = data["nodes"]
    for seeded in ("noise", "seed"):
        del nodes[seeded]
    data.pop("ui", None)
    nodes["model"]["inputs"]["path"] = str(folder)
    nodes["prompt"]["inputs"]["text"] = SD_PROMPT
    nodes["cfg"]["inputs"]["scale"] = scale
    nodes["grid"]["inputs"]["steps"] = steps
    nodes["image"] = {"type": "core/load_image", "inputs": {"path": str(image)}}
    nodes["encode"] = {"type": "core/vae_encode", "inputs": {"images": _link("image", "image"),
                                                             "vae": _link("model", "vae")}}
    nodes["invert"] = {"type": "core/invert", "inputs": {"field": _link("cfg", "vector_field"),
                                                         "latents": _link("encode", "latent"),
                                                         "grid": _link("grid", "time_grid"), "method": "ddim"}}
    nodes["solve"]["inputs"]["noise"] = _link("invert", "noise")
    return Workflow.from_dict(data)


@pytest.fixture(scope="module")
def sd15(sd15_folder, tmp_path_factory):
    """(session, folder, image path): a 16 x 16 random image saved as PNG beside the tiny folder."""
    from PIL import Image

    pixels = torch.randint(0, 256, (16, 16, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    image = tmp_path_factory.mktemp("sd15_image") / "photo.png"
    Image.fromarray(pixels.numpy()).save(image)
    session = Session(device="cpu", output_dir=tmp_path_factory.mktemp("sd15_out"),
                      read_roots=[tmp_path_factory.getbasetemp()])
    return session, sd15_folder, image


def test_invert_on_sd15_is_textbook_ddim_inversion_with_cfg(sd15):
    """With diffusers' own U-Net, text encoder and alphas_cumprod, backwards over the model's levels
    tau_n = 0 < ... < tau_1: eps = eps(x, tau_k | "") + w (eps(x, tau_k | prompt) - eps(x, tau_k | "")),
    x0 = (x - sqrt(1 - abar_k) eps) / sqrt(abar_k), x <- sqrt(abar_{k-1}) x0 + sqrt(1 - abar_{k-1}) eps.
    core/invert (ddim on the CFG field, our time t = 1 - (tau + 1) / N) must land on the same noise."""
    from diffusers import StableDiffusionPipeline

    session, folder, image = sd15
    steps, scale = 4, 5.0
    result = session.run(sd15_inversion_workflow(folder, image, steps, scale), outputs=["invert", "encode", "grid"])
    latents, grid, found = result.value("encode"), result.value("grid"), result.value("invert.noise")
    assert result.value("invert.nfe") == steps and found.shape == latents.shape == (1, 4, 8, 8)

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    positive, negative = pipe.encode_prompt(SD_PROMPT, "cpu", 1, True, "")
    abar = pipe.scheduler.alphas_cumprod
    levels = [round(float((1 - t) * 1000 - 1)) for t in grid.flip(0)]  # data level first
    assert levels[0] == 0 and levels[-1] == 751  # DDIM "leading" levels 1, 251, 501, 751 and the final 0
    x = latents
    with torch.no_grad():
        for level, noisier in zip(levels[:-1], levels[1:], strict=True):
            null, cond = pipe.unet(torch.cat([x, x]), level, torch.cat([negative, positive])).sample.chunk(2)
            eps = null + scale * (cond - null)
            x0 = (x - (1 - abar[level]).sqrt() * eps) / abar[level].sqrt()
            x = abar[noisier].sqrt() * x0 + (1 - abar[noisier]).sqrt() * eps
    torch.testing.assert_close(found, x, rtol=1e-4, atol=1e-4)


def test_sd15_round_trip_error_falls_with_steps_and_heun_beats_euler(sd15):
    """Guidance 1 on a fixed span (t from 0.7 to 0.999, the model's final level): the regenerated latents
    converge to the encoded ones as the steps double, Heun faster than Euler."""
    session, folder, image = sd15
    result = session.run(sd15_inversion_workflow(folder, image, 1, 1.0), outputs=["cfg", "encode"])
    field, latents = result.value("cfg"), result.value("encode")

    def error(method: str, steps: int) -> float:
        grid = uniform_grid(steps, 0.7, 0.999)
        noise = invert(CTX, field, latents, grid, SOLVERS[method]).noise
        return float((ode_solve(CTX, field, noise, grid, SOLVERS[method]).latent - latents).pow(2).mean())

    euler_errors, heun_errors = [error("euler", n) for n in (5, 10)], [error("heun", n) for n in (5, 10)]
    assert euler_errors[1] < 0.5 * euler_errors[0] and heun_errors[1] < 0.5 * heun_errors[0]
    assert heun_errors[0] < euler_errors[0] and heun_errors[1] < euler_errors[1]


def sd15_real_image_workflow(folder: Path, image: Path, guidance: float, windows: tuple[float, float]) -> Workflow:
    """workflows/sd15_p2p_real_image.json on the tiny folder: 16 x 16 pixels, 4 DDIM levels."""
    w = Workflow.load(ROOT / "workflows" / "sd15_p2p_real_image.json")
    for address, value in {"model.path": str(folder), "image.path": str(image), "resize.width": 16,
                           "resize.height": 16, "grid.steps": 4, "guidance.value": guidance,
                           "edit.cross_replace_steps": windows[0], "edit.self_replace_steps": windows[1]}.items():
        w = w.set(address, value)
    return w


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sd15_real_image_p2p_source_is_the_regeneration_and_empty_windows_give_plain_target(sd15, guidance):
    """The SD 1.x real-image workflow: its source half is plain regeneration (CFG with the same guidance)
    from the inverted noise; with empty windows its target half is plain generation of the target prompt
    from that noise; with the shipped windows the target's attention is the source's, so it differs."""
    from nodes.guidance import CFGField

    session, folder, image = sd15
    plain = session.run(sd15_real_image_workflow(folder, image, guidance, (0.0, 0.0)),
                        outputs=["solve", "invert", "cfg", "grid", "field", "model", "null", "decode", "save"])
    noise, grid = plain.value("invert.noise"), plain.value("grid")
    assert noise.shape == (1, 4, 8, 8) and plain.value("decode").shape == (2, 3, 16, 16)
    assert len(plain["save"]["paths"]) == 1
    source, target = plain.value("solve.latent")
    regenerated = ode_solve(CTX, plain.value("cfg"), noise, grid, SOLVERS["ddim"]).latent
    torch.testing.assert_close(source[None], regenerated, rtol=1e-4, atol=1e-4)
    target_prompt = Workflow.load(ROOT / "workflows" / "sd15_p2p_real_image.json").nodes["edit"].inputs["target_prompt"]
    target_field = CFGField(plain.value("field"), plain.value("model.text_encoder").encode([target_prompt]),
                            plain.value("null"), guidance)
    torch.testing.assert_close(target[None], ode_solve(CTX, target_field, noise, grid, SOLVERS["ddim"]).latent,
                               rtol=1e-4, atol=1e-4)

    edited = session.run(sd15_real_image_workflow(folder, image, guidance, (0.8, 0.4)), outputs=["solve"])
    assert "invert" not in edited.ran  # the same inversion, from the cache
    torch.testing.assert_close(edited.value("solve.latent")[0], source, rtol=1e-4, atol=1e-4)
    moved = float((edited.value("solve.latent")[1] - target).abs().mean())
    assert moved > 1e-3  # random weights, 4 levels: a small change (3e-3 at w = 1), far above float error
