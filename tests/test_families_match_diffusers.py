"""Our shipped workflows on tiny random-weight SD 1.x, SDXL, SD3 and Flux folders give the latents that
diffusers' own pipelines give for the same noise, steps, scheduler and guidance (to 1e-4), and every
other solver runs on each family through the same nodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodegraph import Session, Workflow

from . import tiny_diffusers

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
PROMPT = "a photo of the red cat"
SEED = 3


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sd15_folder, sdxl_folder, sd3_folder, flux_folder) -> dict[str, Path]:
    v_prediction = tiny_diffusers.build_sd15(tmp_path_factory.mktemp("sd15_v"), prediction_type="v_prediction")
    return {"sd15": sd15_folder, "sd15_v": v_prediction, "sdxl": sdxl_folder, "sd3": sd3_folder, "flux": flux_folder}


@pytest.fixture(scope="module")
def session(builtin_registry, tmp_path_factory) -> Session:
    return Session(builtin_registry, device="cpu", output_dir=tmp_path_factory.mktemp("out"),
                   read_roots=[tmp_path_factory.getbasetemp()])


def ours(session: Session, workflow: str, folder: Path, size: int, steps: int, **settings) -> dict:
    """Run a shipped workflow on a tiny folder; the starting noise and the final latents."""
    w = Workflow.load(WORKFLOWS / workflow)
    for address, value in {"model.path": str(folder), "noise.width": size, "noise.height": size,
                           "grid.steps": steps, "seed.seed": SEED, "prompt.text": PROMPT, **settings}.items():
        w = w.set(address, value)
    result = session.run(w, outputs=["solve", "noise"])
    return {"noise": result.value("noise"), "latent": result.value("solve.latent")}


def pipeline(cls, folder: Path, **overrides):
    from diffusers import DDIMScheduler

    pipe = cls.from_pretrained(folder, local_files_only=True, **overrides)
    if cls.__name__ == "StableDiffusionPipeline":
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("variant", ["sd15", "sd15_v"])
def test_sd15_workflow_equals_stable_diffusion_pipeline(session, folders, variant):
    from diffusers import StableDiffusionPipeline

    got = ours(session, "sd15_text_to_image.json", folders[variant], 16, 6, **{"cfg.scale": 5.0})
    pipe = pipeline(StableDiffusionPipeline, folders[variant], safety_checker=None, requires_safety_checker=False)
    want = pipe(PROMPT, height=16, width=16, num_inference_steps=6, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    assert got["latent"].shape == want.shape
    torch.testing.assert_close(got["latent"], want, atol=1e-4, rtol=1e-4)


def test_sdxl_workflow_equals_sdxl_pipeline(session, folders):
    from diffusers import StableDiffusionXLPipeline

    size = {f"prompt.{k}": 16 for k in ("width", "height", "target_width", "target_height")}
    size.update({f"null.{k}": 16 for k in ("width", "height", "target_width", "target_height")})
    got = ours(session, "sdxl_text_to_image.json", folders["sdxl"], 16, 5, **size)
    pipe = pipeline(StableDiffusionXLPipeline, folders["sdxl"])
    want = pipe(PROMPT, height=16, width=16, num_inference_steps=5, guidance_scale=5.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    torch.testing.assert_close(got["latent"], want, atol=1e-4, rtol=1e-4)


def test_sd3_workflow_equals_sd3_pipeline(session, folders):
    from diffusers import StableDiffusion3Pipeline

    got = ours(session, "sd3_text_to_image.json", folders["sd3"], 16, 5)
    pipe = pipeline(StableDiffusion3Pipeline, folders["sd3"])
    want = pipe(PROMPT, height=16, width=16, num_inference_steps=5, guidance_scale=7.0,
                generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    torch.testing.assert_close(got["latent"], want, atol=1e-4, rtol=1e-4)


def test_flux_workflow_equals_flux_pipeline(session, folders):
    from diffusers import FluxPipeline

    got = ours(session, "flux_text_to_image.json", folders["flux"], 32, 4, **{"flux_guidance.guidance": 4.0})
    pipe = pipeline(FluxPipeline, folders["flux"])
    packed = pipe(PROMPT, height=32, width=32, num_inference_steps=4, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    want = pipe._unpack_latents(packed, 32, 32, pipe.vae_scale_factor)
    torch.testing.assert_close(got["latent"], want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family,workflow,size", [("sd15", "sd15_text_to_image.json", 16),
                                                  ("sdxl", "sdxl_text_to_image.json", 16),
                                                  ("sd3", "sd3_text_to_image.json", 16),
                                                  ("flux", "flux_text_to_image.json", 32)])
@pytest.mark.parametrize("method", ["euler", "heun", "rk4", "dopri5", "ddim"])
def test_every_solver_runs_on_every_family(session, folders, family, workflow, size, method):
    got = ours(session, workflow, folders[family], size, 3, **{"solve.method": method})
    assert got["latent"].shape == got["noise"].shape
    assert torch.isfinite(got["latent"]).all()
    assert not torch.equal(got["latent"], got["noise"])


def test_changing_the_seed_or_prompt_reuses_the_loaded_model(session, folders):
    w = Workflow.load(WORKFLOWS / "sd15_text_to_image.json").set("model.path", str(folders["sd15"]))
    w = w.set("noise.width", 16).set("noise.height", 16).set("grid.steps", 2)
    session.run(w)
    again = session.run(w.set("seed.seed", 11).set("prompt.text", "a blue dog"))
    assert "model" in again.cached and "model" not in again.ran
    assert {"noise", "prompt", "solve"} <= set(again.ran)


def test_sequential_offload_gives_the_same_latents(session, folders):
    plain = ours(session, "sd15_text_to_image.json", folders["sd15"], 16, 3)
    offloaded = ours(session, "sd15_text_to_image.json", folders["sd15"], 16, 3, **{"model.offload": "sequential"})
    model = session.run(Workflow.load(WORKFLOWS / "sd15_text_to_image.json").set("model.path", str(folders["sd15"]))
                        .set("model.offload", "sequential"), outputs=["model"]).value("model.backbone")
    assert next(model.model.parameters()).device.type == "meta"  # weights live in the hooks' CPU copy
    torch.testing.assert_close(offloaded["latent"], plain["latent"], atol=1e-6, rtol=1e-6)


def test_classifier_guidance_runs_on_a_pretrained_model_through_the_same_nodes(session, folders):
    """A (random) noisy classifier on the SD latent space steers the SD field: the guided result
    differs from the unguided one and stays finite; scale 0 is the unguided field exactly."""
    w = Workflow.load(WORKFLOWS / "sd15_text_to_image.json").set("model.path", str(folders["sd15"]))
    w = w.set("noise.width", 16).set("noise.height", 16).set("grid.steps", 3)
    data = w.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["nodes"]["classifier"] = {"type": "core/noisy_classifier",
                                   "inputs": {"image_size": 8, "in_channels": 4, "channels": 8,
                                              "channel_mults": [1], "num_classes": 3, "seed": 0}}
    data["nodes"]["steer"] = {"type": "core/classifier_guidance",
                              "inputs": {"field": {"from": "cfg", "output": "vector_field"},
                                         "classifier": {"from": "classifier", "output": "classifier"},
                                         "label": 1, "scale": 2.0}}
    data["nodes"]["solve"]["inputs"]["field"] = {"from": "steer", "output": "vector_field"}
    guided = Workflow.model_validate(data)
    plain = session.run(w, outputs=["solve"]).value("solve.latent")
    steered = session.run(guided, outputs=["solve"]).value("solve.latent")
    assert torch.isfinite(steered).all() and not torch.allclose(steered, plain, atol=1e-4)
    off = session.run(guided.set("steer.scale", 0.0), outputs=["solve"]).value("solve.latent")
    torch.testing.assert_close(off, plain)


def test_vae_nodes_equal_the_pipelines_decode_and_encode(session, folders):
    from diffusers import StableDiffusionPipeline

    pipe = pipeline(StableDiffusionPipeline, folders["sd15"], safety_checker=None, requires_safety_checker=False)
    vae = session.run(Workflow.load(WORKFLOWS / "sd15_text_to_image.json").set("model.path", str(folders["sd15"])),
                      outputs=["model"]).value("model.vae")
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
        images = vae.latents_to_images(latents)
        torch.testing.assert_close(images, ((want + 1) / 2).clamp(0, 1), atol=1e-5, rtol=1e-5)
        encoded = vae.images_to_latents(images)
        mean = pipe.vae.encode(images * 2 - 1).latent_dist.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(encoded, mean, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family,workflow,size", [("sd15", "sd15_text_to_image.json", 16),
                                                  ("sd3", "sd3_text_to_image.json", 16)])
def test_the_sde_solver_and_cfg_rescale_and_interval_run_on_pretrained_models(session, folders, family, workflow,
                                                                              size):
    """The same SDE, guidance-rescale and guidance-interval nodes as for our own models."""
    w = Workflow.load(WORKFLOWS / workflow).set("model.path", str(folders[family]))
    w = w.set("noise.width", size).set("noise.height", size).set("grid.steps", 3)
    plain = session.run(w, outputs=["solve"]).value("solve.latent")
    shaped = session.run(w.set("cfg.rescale", 0.7).set("cfg.t_lo", 0.2), outputs=["solve"]).value("solve.latent")
    assert torch.isfinite(shaped).all() and not torch.allclose(shaped, plain)
    data = w.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["nodes"]["sigma"] = {"type": "core/sigma_schedule", "inputs": {"kind": "beta"}}
    data["nodes"]["solve"] = {"type": "core/sde_solve", "inputs": {
        "field": {"from": "cfg", "output": "vector_field"}, "noise": {"from": "noise", "output": "latent"},
        "grid": {"from": "grid", "output": "time_grid"}, "sigma": {"from": "sigma", "output": "sigma_schedule"},
        "seed": 1}}
    sde = session.run(Workflow.model_validate(data), outputs=["solve"]).value("solve.latent")
    assert sde.shape == plain.shape and torch.isfinite(sde).all() and not torch.allclose(sde, plain)
