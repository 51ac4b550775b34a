"""The tiny diffusers pipelines of tests/tiny_diffusers.py: each family saves, reloads offline and runs two steps;
its tokenizers round-trip and truncate; building is deterministic."""

import json
import shutil

import pytest
import torch
from diffusers import FluxPipeline, StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

from .tiny_diffusers import build_sd15, clip_tokenizer, t5_tokenizer

PROMPT = "a photo of a red cat"

# family: (pipeline class, call arguments, latent output shape)
FAMILIES = {
    "sd15": (StableDiffusionPipeline, {"guidance_scale": 5.0}, (1, 4, 8, 8)),
    "sdxl": (StableDiffusionXLPipeline, {"guidance_scale": 5.0}, (1, 4, 8, 8)),
    "sd3": (StableDiffusion3Pipeline, {"guidance_scale": 5.0}, (1, 16, 8, 8)),
    # Flux's guidance_scale is the embedded (distilled) guidance, not CFG. Its default size is 128 * vae_scale_factor
    # whatever the transformer, so pass one (divisible by 2 * vae_scale_factor). The latent output stays packed:
    # (batch, 4x4 patches of 2x2 latents, 16 channels * 2 * 2).
    "flux": (FluxPipeline, {"guidance_scale": 3.5, "height": 16, "width": 16}, (1, 16, 64)),
}


@pytest.fixture(params=list(FAMILIES))
def family(request, monkeypatch):
    """(name, pipeline reloaded from the session folder with the hub offline); reloaded per test, since a
    pipeline call changes its scheduler's state."""
    name = request.param
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipeline = FAMILIES[name][0].from_pretrained(request.getfixturevalue(f"{name}_folder"), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    return name, pipeline


def tokenizers(pipeline) -> list:
    return [
        pipeline.components[key] for key in ("tokenizer", "tokenizer_2", "tokenizer_3") if key in pipeline.components
    ]


def latents(name, pipeline, seed=0) -> torch.Tensor:
    kwargs = FAMILIES[name][1]
    generator = torch.Generator().manual_seed(seed)
    return pipeline(PROMPT, num_inference_steps=2, generator=generator, output_type="latent", **kwargs).images


def test_two_steps_give_finite_reproducible_latents(family):
    name, pipeline = family
    first = latents(name, pipeline)
    assert first.shape == FAMILIES[name][2]
    assert torch.isfinite(first).all()
    assert torch.equal(latents(name, pipeline), first)
    assert not torch.equal(latents(name, pipeline, seed=1), first)


def test_tokenizers_round_trip_and_truncate_at_model_max_length(family):
    for tokenizer in tokenizers(family[1]):
        ids = tokenizer(PROMPT).input_ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
        truncated = tokenizer(" ".join(["cat"] * 600), truncation=True).input_ids
        assert len(truncated) == tokenizer.model_max_length
        assert truncated[-1] == tokenizer.eos_token_id  # truncation keeps the end-of-text token


def test_reloaded_tokenizers_encode_as_built(family):
    """transformers rebuilds a T5 tokenizer on load from its vocabulary alone: the built one must already match."""
    text = "A photo of the CAT, naïve 42!"
    for tokenizer in tokenizers(family[1]):
        built = t5_tokenizer() if tokenizer.eos_token == "</s>" else clip_tokenizer()
        assert tokenizer(text).input_ids == built(text).input_ids


def test_build_is_deterministic(sd15_folder, tmp_path):
    again = build_sd15(tmp_path / "again")
    files = sorted(path.relative_to(sd15_folder) for path in sd15_folder.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(again) for path in again.rglob("*") if path.is_file())
    for file in files:
        assert (sd15_folder / file).read_bytes() == (again / file).read_bytes(), file


def test_sd15_prediction_type_reaches_the_scheduler(tmp_path):
    folder = build_sd15(tmp_path / "v", prediction_type="v_prediction")
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "v_prediction"


@pytest.mark.parametrize("name, part", [("sd15", "unet"), ("flux", "transformer")])
def test_missing_denoiser_folder_raises(name, part, request, tmp_path, monkeypatch):
    """diffusers raises OSError, naming config.json in the pipeline's root folder rather than the missing part."""
    folder = shutil.copytree(request.getfixturevalue(f"{name}_folder"), tmp_path / name)
    shutil.rmtree(folder / part)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="config.json"):
        FAMILIES[name][0].from_pretrained(folder, local_files_only=True)
