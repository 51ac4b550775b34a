"""How each family's original single-file checkpoint is laid out, recognised from its tensor names alone.

A family's `single_file` reader takes the file's header (name -> shape, dtype; nothing loaded) and returns
a `FilePlan` (which parts the file holds, under which prefix, in which original layout, and the shipped
config folder to start from) or a sentence saying why the file is not of this family; the loader tries
every registered family and reports all the sentences when none matches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..models.checkpoint import TensorHeader
from .original_parts import (
    CLIP_TEXT,
    CLIP_TEXT_PROJECTED,
    FLUX_DIT,
    LDM_UNET,
    LDM_VAE,
    OPEN_CLIP_PENULTIMATE,
    OPEN_CLIP_PROJECTED,
    SD3_MMDIT,
    T5_ENCODER,
    OriginalPart,
)

CONFIGS = Path(__file__).resolve().parent / "configs"
"""The real models' configs (diffusers / transformers config.json contents), one folder per variant."""

Header = Mapping[str, TensorHeader]
UNET = "model.diffusion_model."


@dataclass(frozen=True)
class FilePart:
    """One component inside a single file: the tensors named `prefix` + ..., in the `layout` given."""

    layout: OriginalPart
    prefix: str


@dataclass(frozen=True)
class FilePlan:
    """What a single-file checkpoint holds, as its family reads it.

    configs: a folder of `<part>.json` base configs and the scheduler config `scheduler`; denoiser: the part
    that is the U-Net or transformer; parts: the parts present in the file (by pipeline part name);
    tokenizers: tokenizer part -> class for the text encoders the file holds (never in the file itself);
    prediction: what prediction "auto" means when the file says more than the scheduler config (None: the
    scheduler's).
    """

    configs: Path
    denoiser: str
    parts: Mapping[str, FilePart]
    tokenizers: Mapping[str, str] = field(default_factory=dict)
    prediction: str | None = None
    scheduler: str = "scheduler.json"


SingleFileReader = Callable[[Header], "FilePlan | str"]


def _held(header: Header, parts: Mapping[str, FilePart]) -> dict[str, FilePart]:
    """The parts with at least one tensor under their prefix (an empty prefix: the denoiser, always)."""
    return {name: part for name, part in parts.items() if any(n.startswith(part.prefix) for n in header)}


def _dit_prefix(header: Header, marker: str) -> str | None:
    """Transformers ship with or without the LDM prefix (ComfyUI's all-in-one files have it)."""
    return next((prefix for prefix in (UNET, "") if prefix + marker in header), None)


def _unet_reason(header: Header, sdxl: bool) -> str | None:
    if UNET + "input_blocks.0.0.weight" not in header:
        return f"no key {UNET}input_blocks.0.0.weight"
    if sdxl and UNET + "label_emb.0.0.weight" not in header:
        return f"no key {UNET}label_emb.0.0.weight (SDXL's size/crop embedding)"
    if not sdxl and UNET + "label_emb.0.0.weight" in header:
        return f"{UNET}label_emb.0.0.weight is SDXL's size/crop embedding"
    return None


def _v_marked(header: Header) -> str | None:
    """Files saved by ComfyUI and most v-prediction fine-tunes carry an empty `v_pred` tensor."""
    return "v" if "v_pred" in header else None


def sd_file(header: Header) -> FilePlan | str:
    """SD 1.x (CLIP-L, context 768) or 2.x (OpenCLIP-H, context 1024, read at its penultimate layer;
    "auto" prediction = v, as 2.0-v / 2.1 768 are: set epsilon for the 512 "base" models)."""
    reason = _unet_reason(header, sdxl=False)
    if reason:
        return reason
    sd2 = any(n.startswith("cond_stage_model.model.") for n in header) or any(
        n.startswith(UNET) and n.endswith("attn2.to_k.weight") and h.shape[-1] == 1024 for n, h in header.items())
    text = (FilePart(OPEN_CLIP_PENULTIMATE, "cond_stage_model.model.") if sd2
            else FilePart(CLIP_TEXT, "cond_stage_model.transformer."))
    parts = {"unet": FilePart(LDM_UNET, UNET), "vae": FilePart(LDM_VAE, "first_stage_model."), "text_encoder": text}
    return FilePlan(CONFIGS / ("sd2" if sd2 else "sd1"), "unet", _held(header, parts), {"tokenizer": "CLIPTokenizer"},
                    _v_marked(header) or ("v" if sd2 else None))


def sdxl_file(header: Header) -> FilePlan | str:
    """SDXL base: CLIP-L (`conditioner.embedders.0.transformer`) and OpenCLIP-bigG (`.1.model`)."""
    reason = _unet_reason(header, sdxl=True)
    if reason:
        return reason
    if "conditioner.embedders.0.model.text_projection" in header:
        return "an SDXL refiner (one OpenCLIP encoder), which is not supported"
    parts = {"unet": FilePart(LDM_UNET, UNET), "vae": FilePart(LDM_VAE, "first_stage_model."),
             "text_encoder": FilePart(CLIP_TEXT, "conditioner.embedders.0.transformer."),
             "text_encoder_2": FilePart(OPEN_CLIP_PROJECTED, "conditioner.embedders.1.model.")}
    return FilePlan(CONFIGS / "sdxl", "unet", _held(header, parts),
                    {"tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer"}, _v_marked(header))


def sd3_file(header: Header) -> FilePlan | str:
    """SD3 / SD3.5: the MM-DiT, its VAE and `text_encoders.clip_l / clip_g / t5xxl` (T5 optional)."""
    marker = "joint_blocks.0.x_block.attn.qkv.weight"
    prefix = _dit_prefix(header, marker)
    if prefix is None:
        return f"no key ({UNET}){marker}"
    parts = _held(header, {"transformer": FilePart(SD3_MMDIT, prefix), "vae": FilePart(LDM_VAE, "first_stage_model."),
                           "text_encoder": FilePart(CLIP_TEXT_PROJECTED, "text_encoders.clip_l.transformer."),
                           "text_encoder_2": FilePart(CLIP_TEXT_PROJECTED, "text_encoders.clip_g.transformer."),
                           "text_encoder_3": FilePart(T5_ENCODER, "text_encoders.t5xxl.transformer.")})
    tokenizers = {"tokenizer": "CLIPTokenizer", "tokenizer_2": "CLIPTokenizer"}
    if "text_encoder_3" in parts:
        tokenizers["tokenizer_3"] = "T5TokenizerFast"
    return FilePlan(CONFIGS / "sd3", "transformer", parts, tokenizers)


def flux_file(header: Header) -> FilePlan | str:
    """FLUX.1 dev (guidance embedding `guidance_in`, dynamic shift) or schnell (neither); usually the
    transformer alone, or ComfyUI's all-in-one with `vae.` and `text_encoders.clip_l / t5xxl`."""
    marker = "double_blocks.0.img_attn.qkv.weight"
    prefix = _dit_prefix(header, marker)
    if prefix is None:
        return f"no key ({UNET}){marker}"
    vae = "vae." if any(n.startswith("vae.") for n in header) else "first_stage_model."
    parts = {"transformer": FilePart(FLUX_DIT, prefix), "vae": FilePart(LDM_VAE, vae),
             "text_encoder": FilePart(CLIP_TEXT, "text_encoders.clip_l.transformer."),
             "text_encoder_2": FilePart(T5_ENCODER, "text_encoders.t5xxl.transformer.")}
    dev = prefix + "guidance_in.in_layer.weight" in header
    return FilePlan(CONFIGS / "flux", "transformer", _held(header, parts),
                    {"tokenizer": "CLIPTokenizer", "tokenizer_2": "T5TokenizerFast"},
                    scheduler="scheduler.json" if dev else "scheduler_schnell.json")
