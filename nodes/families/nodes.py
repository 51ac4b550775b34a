"""Nodes for pretrained model families: load a pipeline folder or single parts, family-specific conditioning."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import torch
from pydantic import Field

from nodegraph import Context, ModelPath, Widget, node

from ..annotations import Seed
from ..sockets import BACKBONE, CONDITIONING, LATENT, PATH, TEXT_ENCODER, VAE
from ..text.encoder import split_prompts, warn_dropped
from .adapters import DiffusersVAE, FluxBackbone, SD3Backbone, UNetBackbone
from .family import ModelFamily, load_part, pretrained
from .family import load_pipeline as load_pipeline_folder
from .loading import DTYPES, ModelFolderError, diffusers_component, local_folder, read_json
from .single_file import load_checkpoint as load_checkpoint_file
from .single_file import load_file_backbone, read_checkpoint
from .text import SDXLEncoder

DType = Literal["float32", "bfloat16", "float16"]
"""Weights dtype: float32 everywhere; bfloat16 / float16 halve memory (GPU; slow or unsupported on CPU)."""

MODEL_PATH_HELP = ("a diffusers pipeline folder (model_index.json, unet/ or transformer/, vae/, text_encoder*/, "
                   "tokenizer*/, scheduler/); set it with --set model.path=/my/model")


def _families(ctx: Context) -> dict[str, ModelFamily]:
    return ctx.components("family")


class PipelineParts(NamedTuple):
    backbone: BACKBONE
    vae: VAE
    text_encoder: TEXT_ENCODER
    path: PATH


@node("core/load_pipeline", category="models", display_name="Load model (diffusers folder)")
def load_pipeline(ctx: Context, path: Annotated[ModelPath, Field(description=MODEL_PATH_HELP)],
                  dtype: DType = "float32", offload: Literal["none", "sequential"] = "none") -> PipelineParts:
    """Load an SD 1.x/2.x, SDXL, SD3 or Flux pipeline folder offline: the denoiser as a BACKBONE (its
    prediction kind and probability path recorded, so core/model_field needs nothing else), the VAE, the
    family's text encoder(s) and the PATH of its scheduler (DDPM schedule or rectified flow). Loaded once
    and cached: changing a prompt or a seed does not reload it. offload "sequential": weights stay in CPU
    memory and each layer visits the GPU only while it runs (for GPUs too small for the model)."""
    parts = load_pipeline_folder(path, _families(ctx), DTYPES[dtype], ctx.device, offload == "sequential")
    return PipelineParts(parts.backbone, parts.vae, parts.text_encoder, parts.path)


FILE_HELP = ("one .safetensors in its original layout, as downloaded: SD 1.x/2.x or SDXL (model.diffusion_model.*, "
             "first_stage_model.*, cond_stage_model.* / conditioner.embedders.*), SD3 (joint_blocks, text_encoders.*) "
             "or Flux (double_blocks, single_blocks); the family is read from the tensor names")
TOKENIZERS_HELP = ("a folder holding tokenizer/ (tokenizer_2/, tokenizer_3/), e.g. a diffusers pipeline folder of "
                   "the same family: single files hold no tokenizers; needed when the text encoders come from the file")
TEXT_ENCODERS_HELP = ("a diffusers pipeline folder of the same family whose tokenizers and text encoders are used "
                      "instead of the file's; needed for files without text encoders (most Flux files)")
VAE_HELP = ("a VAE folder (config.json + .safetensors), a pipeline folder with vae/, or an original-layout VAE "
            ".safetensors (Flux's ae.safetensors); replaces the file's VAE, needed when the file has none")
CONFIG_HELP = ("a diffusers pipeline folder whose part configs (unet/ or transformer/, vae/, text_encoder*/ "
               "config.json) replace the shipped ones for what tensor shapes do not say (attention heads); "
               "leave empty for standard models")
Prediction = Literal["auto", "epsilon", "v"]
"""auto: what the file marks (a v_pred tensor), else the family's (SD 2.x: v; use epsilon for 2.x 512 "base")."""


@node("core/load_checkpoint", category="models", display_name="Load model (single file)")
def load_checkpoint(ctx: Context, file: Annotated[ModelPath, Field(description=FILE_HELP)],
                    tokenizers: Annotated[ModelPath | None, Field(description=TOKENIZERS_HELP)] = None,
                    text_encoders: Annotated[ModelPath | None, Field(description=TEXT_ENCODERS_HELP)] = None,
                    vae: Annotated[ModelPath | None, Field(description=VAE_HELP)] = None,
                    config: Annotated[ModelPath | None, Field(description=CONFIG_HELP)] = None,
                    prediction: Prediction = "auto", dtype: DType = "float32") -> PipelineParts:
    """Load a single-file checkpoint (SD 1.x/2.x, SDXL, SD3, Flux) offline as core/load_pipeline's four
    outputs. All-in-one files need only `tokenizers`; transformer-only files (Flux) need `text_encoders`
    and `vae`. The family, every size and which parts are present come from the file's tensor names and
    shapes; the rest of each config and the scheduler (hence the PATH) are the family's, shipped with
    nodegraph. Checked before loading: a pickle is refused unopened, a header must match its file, each
    part must fit its own tensors."""
    parts = load_checkpoint_file(file, _families(ctx), DTYPES[dtype], ctx.device, tokenizers=tokenizers,
                                 text_encoders=text_encoders, vae=vae, config=config, prediction=prediction)
    return PipelineParts(parts.backbone, parts.vae, parts.text_encoder, parts.path)


class DenoiserParts(NamedTuple):
    backbone: BACKBONE
    path: PATH


@node("core/load_denoiser_file", category="models", display_name="Load U-Net / transformer (single file)")
def load_denoiser_file(ctx: Context, file: Annotated[ModelPath, Field(description=FILE_HELP)],
                       config: Annotated[ModelPath | None, Field(description=CONFIG_HELP)] = None,
                       prediction: Prediction = "auto", dtype: DType = "float32") -> DenoiserParts:
    """Only the U-Net or transformer of a single-file checkpoint (all-in-one or denoiser-only), with its
    family's PATH: to pair a fine-tune with text encoders and a VAE already loaded, without loading the
    file's own again."""
    checkpoint = read_checkpoint(file, _families(ctx))
    where = local_folder(config, "input 'config'") if config is not None else None
    backbone, path = load_file_backbone(checkpoint, prediction, where, DTYPES[dtype], ctx.device)
    return DenoiserParts(backbone, path)


DENOISERS = {"UNet2DConditionModel": "sd", "SD3Transformer2DModel": "sd3", "FluxTransformer2DModel": "flux"}


@node("core/load_denoiser", category="models", display_name="Load U-Net / transformer folder")
def load_denoiser(ctx: Context, folder: ModelPath, path: PATH,
                  prediction: Literal["auto", "epsilon", "v", "x0"] = "auto", dtype: DType = "float32") -> BACKBONE:
    """A denoiser folder alone (config.json + .safetensors: a U-Net, SD3 or Flux transformer) on the linked
    path (a loader's or core/ddpm_path's). U-Nets: prediction auto = epsilon; transformers predict
    velocity (eps - x0, negated), so prediction must stay auto for them."""
    where = local_folder(folder, "input 'folder'")
    class_name = str(read_json(where / "config.json", "input 'folder'").get("_class_name", ""))
    if class_name not in DENOISERS:
        raise ModelFolderError(f"input 'folder': {str(where)!r} holds a {class_name or 'model without _class_name'}; "
                               f"expected one of {sorted(DENOISERS)}")
    model = diffusers_component(where, class_name, f"denoiser {str(where)!r}", DTYPES[dtype], ctx.device)
    if class_name == "UNet2DConditionModel":
        from ..schedules import DiscreteDDPMPath

        if not isinstance(path, DiscreteDDPMPath):
            raise ValueError(f"input 'path': a U-Net runs on a DDPM schedule (core/ddpm_path), not {path!r}")
        backbone = UNetBackbone(model, "epsilon" if prediction == "auto" else prediction, path)
    else:
        if prediction != "auto":
            raise ValueError(f"input 'prediction': {class_name} predicts velocity; leave prediction on auto")
        backbone = SD3Backbone(model) if class_name == "SD3Transformer2DModel" else FluxBackbone(model)
    return pretrained(backbone, path, DENOISERS[class_name], str(where))


@node("core/load_vae_folder", category="models", display_name="Load VAE folder")
def load_vae_folder(ctx: Context, folder: ModelPath, dtype: DType = "float32") -> VAE:
    """An AutoencoderKL folder (config.json + .safetensors), e.g. a pipeline's vae/ or a fine-tuned VAE:
    latents = (mean - shift_factor) scaling_factor, images = decode(z / scaling_factor + shift_factor)."""
    where = local_folder(folder, "input 'folder'")
    return DiffusersVAE(diffusers_component(where, "AutoencoderKL", f"VAE {str(where)!r}", DTYPES[dtype],
                                            ctx.device))


@node("core/load_text_encoders", category="text", display_name="Load text encoders (pipeline folder)")
def load_text_encoders(ctx: Context, folder: ModelPath, dtype: DType = "float32") -> TEXT_ENCODER:
    """Only the tokenizers and text encoders of a pipeline folder (the family from its model_index.json),
    to pair with a denoiser loaded on its own."""
    from .family import family_for, read_index

    where = local_folder(folder, "input 'folder'")
    index = read_index(where)
    family = family_for(index, _families(ctx), f"{str(where)!r}")
    parts = {part: load_part(where, index, part, DTYPES[dtype], ctx.device) for part in family.text_parts}
    return family.make_encoder(parts, index)


Size = Annotated[int, Field(ge=8, le=16384)]


@node("core/sdxl_text_encode", category="text", display_name="Encode text (SDXL size/crop)")
def sdxl_text_encode(ctx: Context, encoder: TEXT_ENCODER, text: Annotated[str, Widget(kind="multiline")] = "",
                     width: Size = 1024, height: Size = 1024, crop_left: Annotated[int, Field(ge=0)] = 0,
                     crop_top: Annotated[int, Field(ge=0)] = 0, target_width: Size = 1024,
                     target_height: Size = 1024) -> CONDITIONING:
    """SDXL prompts with micro-conditioning: time_ids = (height, width, crop_top, crop_left, target_height,
    target_width) of the image the model should imitate (the pipeline uses the output size, crop 0, 0)."""
    if not isinstance(encoder, SDXLEncoder):
        raise ValueError(f"input 'encoder': SDXL conditioning needs an SDXL text encoder, got {type(encoder).__name__}")
    prompts = split_prompts(text)
    warn_dropped(ctx, encoder, prompts)
    return encoder.encode(prompts, (height, width), (crop_top, crop_left), (target_height, target_width))


@node("core/flux_guidance", category="guidance", display_name="Flux guidance (distilled)")
def flux_guidance(conditioning: CONDITIONING,
                  guidance: Annotated[float, Field(ge=0, le=100)] = 3.5) -> CONDITIONING:
    """The guidance scale a guidance-distilled model (FLUX.1-dev) reads as an input embedding: one forward
    pass per step, no CFG. Ignored by models without guidance_embeds (FLUX.1-schnell)."""
    batch = conditioning.batch_size
    return conditioning.with_extra("guidance", torch.full((batch,), float(guidance)))


@node("core/latent_noise", category="solvers", display_name="Latent noise (image size)")
def latent_noise(ctx: Context, vae: VAE, width: Size = 512, height: Size = 512,
                 batch: Annotated[int, Field(ge=1, le=256)] = 1, seed: Seed = 0) -> LATENT:
    """Starting noise x_0 ~ N(0, I) for images of width x height pixels: (batch, C, height/f, width/f) with
    the VAE's latent channels C and downscale f. Drawn like diffusers' pipelines draw theirs (one CPU-seeded
    torch.randn of that shape), so a seed gives the image diffusers gives for it."""
    channels, factor = getattr(vae, "latent_channels", None), getattr(vae, "downscale", None)
    if channels is None or factor is None:
        raise ValueError("input 'vae': this VAE does not say its latent size; use core/noise with a shape")
    if width % factor or height % factor:
        raise ValueError(f"width and height must be multiples of {factor} for this VAE, got {width}x{height}")
    shape = (batch, channels, height // factor, width // factor)
    noise = torch.randn(shape, generator=ctx.generator(seed, device="cpu"))
    return noise.to(ctx.device)
