"""Model families: how a diffusers pipeline folder becomes our BACKBONE, VAE, TEXT_ENCODER and PATH.

A `ModelFamily` is registered as the component ("family", name). `load_pipeline` reads the folder's
model_index.json, picks the family whose `pipelines` list its `_class_name`, derives the path and the
prediction from scheduler/scheduler_config.json and loads each part offline (see `loading`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.base import Backbone
from ..models.training_info import TrainingInfo, with_training_info
from ..paths import GaussianPath
from ..schedules import path_from_scheduler
from .adapters import DiffusersVAE, FluxBackbone, SD3Backbone, UNetBackbone
from .layouts import SingleFileReader, flux_file, sd3_file, sd_file, sdxl_file
from .loading import (
    CheckpointError,
    ModelFolderError,
    diffusers_component,
    local_folder,
    read_json,
    tokenizer,
    transformers_component,
)
from .text import CLIPEncoder, FamilyTextEncoder, FluxEncoder, SD3Encoder, SDXLEncoder

BackboneMaker = Callable[[nn.Module, GaussianPath, str], Backbone]
EncoderMaker = Callable[[Mapping[str, Any], Mapping[str, Any]], FamilyTextEncoder]


@dataclass(frozen=True)
class ModelFamily:
    """One family of pretrained pipelines.

    pipelines: model_index.json `_class_name`s it loads; denoiser: the folder of its U-Net or transformer;
    text_parts: the tokenizer / text-encoder folders it needs (those model_index marks null are passed as
    None, for optional parts such as SD3's T5); make_backbone(model, path, prediction) wraps the denoiser;
    make_encoder(parts, model_index) builds the text encoder from the loaded parts; single_file reads the
    header of an original single-file checkpoint into a `layouts.FilePlan`, or says why it is not one of
    this family's (None: the family has no single-file form).
    """

    name: str
    pipelines: tuple[str, ...]
    denoiser: str
    text_parts: tuple[str, ...]
    make_backbone: BackboneMaker
    make_encoder: EncoderMaker
    optional_parts: tuple[str, ...] = ()
    single_file: SingleFileReader | None = None


def _sd_encoder(parts: Mapping[str, Any], _index: Mapping[str, Any]) -> FamilyTextEncoder:
    return CLIPEncoder(parts["tokenizer"], parts["text_encoder"])


def _sdxl_encoder(parts: Mapping[str, Any], index: Mapping[str, Any]) -> FamilyTextEncoder:
    return SDXLEncoder(parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"], parts["text_encoder_2"],
                       bool(index.get("force_zeros_for_empty_prompt", True)))


def _sd3_encoder(parts: Mapping[str, Any], _index: Mapping[str, Any]) -> FamilyTextEncoder:
    t5 = parts.get("text_encoder_3")
    joint = t5.config.d_model if t5 is not None else 4096
    return SD3Encoder(parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"], parts["text_encoder_2"],
                      parts.get("tokenizer_3"), t5, joint_dim=joint)


def _flux_encoder(parts: Mapping[str, Any], _index: Mapping[str, Any]) -> FamilyTextEncoder:
    return FluxEncoder(parts["tokenizer"], parts["text_encoder"], parts["tokenizer_2"], parts["text_encoder_2"])


def _unet(model: nn.Module, path: GaussianPath, prediction: str) -> Backbone:
    return UNetBackbone(model, prediction, path)


BUILTIN_FAMILIES: tuple[ModelFamily, ...] = (
    ModelFamily("sd", ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline",
                       "StableDiffusionInpaintPipeline"), "unet", ("tokenizer", "text_encoder"), _unet, _sd_encoder,
                single_file=sd_file),
    ModelFamily("sdxl", ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"), "unet",
                ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"), _unet, _sdxl_encoder,
                single_file=sdxl_file),
    ModelFamily("sd3", ("StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline"), "transformer",
                ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2", "tokenizer_3", "text_encoder_3"),
                lambda model, _path, prediction: SD3Backbone(model, prediction), _sd3_encoder,
                optional_parts=("tokenizer_3", "text_encoder_3"), single_file=sd3_file),
    ModelFamily("flux", ("FluxPipeline", "FluxImg2ImgPipeline"), "transformer",
                ("tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2"),
                lambda model, _path, prediction: FluxBackbone(model, prediction), _flux_encoder,
                single_file=flux_file),
)


@dataclass
class Pipeline:
    """What a pipeline folder loads to (the outputs of core/load_pipeline)."""

    family: ModelFamily
    backbone: Backbone
    vae: DiffusersVAE
    text_encoder: FamilyTextEncoder
    path: GaussianPath


def read_index(folder: Path) -> dict[str, Any]:
    return read_json(folder / "model_index.json", "model folder")


def family_for(index: Mapping[str, Any], families: Mapping[str, ModelFamily], where: str) -> ModelFamily:
    name = str(index.get("_class_name", ""))
    for family in families.values():
        if name in family.pipelines:
            return family
    known = sorted(p for f in families.values() for p in f.pipelines)
    raise CheckpointError(f"{where}: pipeline {name or '(no _class_name)'!r} is not a known family; known: "
                          f"{', '.join(known)}")


def _component_class(index: Mapping[str, Any], part: str, where: str) -> str | None:
    entry = index.get(part)
    if entry is None or entry == [None, None]:
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise CheckpointError(f"{where}: model_index.json entry {part!r} must be [library, class], got {entry!r}")
    return entry[1]


def load_part(folder: Path, index: Mapping[str, Any], part: str, dtype: torch.dtype, device: str) -> Any:
    """One component of a pipeline folder by its model_index entry; None if the index marks it absent."""
    where = f"{str(folder)!r}"
    class_name = _component_class(index, part, where)
    if class_name is None:
        return None
    what = f"{part} ({class_name}) of {where}"
    if not (folder / part).is_dir():
        raise ModelFolderError(f"{what}: the folder {str(folder / part)!r} is missing")
    if part.startswith("tokenizer"):
        return tokenizer(folder / part, class_name, what)
    if part.startswith("text_encoder"):
        return transformers_component(folder / part, class_name, what, dtype, device)
    return diffusers_component(folder / part, class_name, what, dtype, device)


def scheduler_path(folder: Path) -> tuple[GaussianPath, str]:
    config = read_json(folder / "scheduler" / "scheduler_config.json", f"scheduler of {str(folder)!r}")
    try:
        return path_from_scheduler(config)
    except ValueError as error:
        raise CheckpointError(f"{str(folder / 'scheduler')!r}: {error}") from None


def pretrained(backbone: Backbone, path: GaussianPath, family: str, source: str) -> Backbone:
    """Record the path (core/model_field reads it) and where the weights came from."""
    return with_training_info(backbone, TrainingInfo("pretrained", path=path.config(),
                                                     settings={"family": family, "source": source}))


def sequential_offload(wrapper: nn.Module, device: str) -> nn.Module:
    """Keep the wrapper's weights in CPU memory and move each layer to `device` only while it runs
    (accelerate's hooks): the smallest GPU footprint, at the cost of a transfer per layer and step."""
    from accelerate import cpu_offload

    for model in wrapper.children():
        cpu_offload(model, execution_device=torch.device(device))
    wrapper.execution_device = device
    return wrapper


def load_pipeline(value: str, families: Mapping[str, ModelFamily], dtype: torch.dtype, device: str,
                  offload: bool = False) -> Pipeline:
    """Load a diffusers pipeline folder as our parts; errors name the file before anything heavy loads.
    `offload`: load to the CPU and run layer by layer on `device` (`sequential_offload`)."""
    target, device = device, ("cpu" if offload else device)
    folder = local_folder(value, "model path")
    index = read_index(folder)
    family = family_for(index, families, f"{str(folder)!r}")
    for part in (family.denoiser, "vae", *family.text_parts):
        if part not in family.optional_parts and _component_class(index, part, str(folder)) is None:
            raise ModelFolderError(f"{str(folder)!r}: model_index.json lists no {part!r}, which {family.name} needs")
        if _component_class(index, part, str(folder)) is not None and not (folder / part).is_dir():
            raise ModelFolderError(f"{str(folder)!r}: the {part!r} folder is missing")
    path, prediction = scheduler_path(folder)
    denoiser = load_part(folder, index, family.denoiser, dtype, device)
    backbone = pretrained(family.make_backbone(denoiser, path, prediction), path, family.name, str(folder))
    vae = DiffusersVAE(load_part(folder, index, "vae", dtype, device))
    parts = {part: load_part(folder, index, part, dtype, device) for part in family.text_parts}
    encoder = family.make_encoder(parts, index)
    if offload:
        backbone, vae, encoder = (sequential_offload(m, target) for m in (backbone, vae, encoder))
    return Pipeline(family, backbone, vae, encoder, path)
