"""Single-file checkpoints in their original layouts (the .safetensors users download) as our parts.

The file is checked before anything is read: it exists, is .safetensors (a pickle is refused, never
opened), and its header agrees with its size (`loading.safetensors_header`). Its family comes from the
tensor names alone (each family's `single_file` reader, see `layouts`). Each part's config starts from the
family's shipped one (`configs/`) or a `config` pipeline folder's, with every size read off the tensors;
the part is then built on the meta device and refused if it holds more parameters than its own tensors
(or $NODEGRAPH_MAX_PARAMETERS), and only then are its weights read, converted and loaded strictly.
Tokenizers are never inside such files; parts the file lacks (Flux's text encoders, a VAE) come from
folders, as the node's inputs say.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_parameter_registration_hook

from ..models.base import Backbone
from ..models.checkpoint import MAX_PARAMETERS_ENV, TensorHeader, build_on_meta, max_parameters
from ..paths import GaussianPath
from ..schedules import path_from_scheduler
from .adapters import DiffusersVAE
from .family import ModelFamily, Pipeline, family_for, load_part, pretrained, read_index
from .layouts import FilePart, FilePlan
from .loading import (
    HUB_ID,
    PICKLE_SUFFIXES,
    CheckpointError,
    ModelFolderError,
    diffusers_component,
    local_folder,
    offline,
    read_json,
    safetensors_header,
    tokenizer,
)
from .original_parts import LDM_VAE


@dataclass(frozen=True)
class Checkpoint:
    """A checked single file: its header and the family's reading of it."""

    file: Path
    header: Mapping[str, TensorHeader]
    family: ModelFamily
    plan: FilePlan

    def tensors_of(self, name: str) -> list[str]:
        """The tensor names of part `name` (a part without prefix takes what no other part claims)."""
        prefix = self.plan.parts[name].prefix
        others = [p.prefix for n, p in self.plan.parts.items() if n != name and p.prefix]
        return [k for k in self.header if k.startswith(prefix) and not (not prefix and k.startswith(tuple(others)))]


def checkpoint_file(value: str, what: str) -> Path:
    """`value` as an existing .safetensors file, or an error that names it and says what to do."""
    path = Path(value).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{what}: {value!r} is a pickled checkpoint ({path.suffix}); nodegraph never unpickles "
                              "(loading a pickle runs code from the file). Use the model's .safetensors release.")
    if path.is_dir():
        raise ModelFolderError(f"{what}: {value!r} is a folder; this input takes one .safetensors file "
                               "(core/load_pipeline loads diffusers folders)")
    if not path.is_file():
        hint = ""
        if HUB_ID.match(value) or value.startswith(("http://", "https://", "hf.co/", "huggingface.co/")):
            hint = (" It looks like a Hugging Face hub name: nodegraph never downloads models; download the file "
                    "yourself and set the path to it.")
        raise ModelFolderError(f"{what}: no file {value!r}.{hint}")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{what}: {value!r} is not a .safetensors file")
    return path


def read_checkpoint(value: str, families: Mapping[str, ModelFamily], what: str = "input 'file'") -> Checkpoint:
    """Check the file and find its family from the header; the error lists every family tried and why not."""
    file = checkpoint_file(value, what)
    header = safetensors_header(file)
    reasons = []
    for family in families.values():
        if family.single_file is None:
            continue
        plan = family.single_file(header)
        if isinstance(plan, FilePlan):
            return Checkpoint(file, header, family, plan)
        reasons.append(f"{family.name}: {plan}")
    names = sorted(header)[:3]
    raise CheckpointError(f"{what}: {str(file)!r} ({len(header)} tensors, e.g. {', '.join(names) or 'none'}) is not "
                          f"a single-file checkpoint of a known family. Tried {'; '.join(reasons) or 'none'}.")


def base_config(plan: FilePlan, part: str, config: Path | None) -> dict[str, Any]:
    """The config shapes cannot give: a `config` pipeline folder's part, else the family's shipped one."""
    if config is None:
        return read_json(plan.configs / f"{part}.json", f"shipped {part} config")
    return read_json(config / part / "config.json", f"input 'config' ({part})")


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build a module whose parameters live on the meta device (nothing allocated, no initialisation
    cost) while its buffers are real: the computed ones (position ids) are then right without weights."""
    thread = threading.get_ident()

    def to_meta(_module: nn.Module, _name: str, param: nn.Parameter | None) -> nn.Parameter | None:
        if param is None or threading.get_ident() != thread or param.device.type == "meta":
            return None
        return nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    handle = register_module_parameter_registration_hook(to_meta)
    try:
        yield
    finally:
        handle.remove()


def _weights(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def load_file_part(file: Path, header: Mapping[str, TensorHeader], names: list[str], part: FilePart,
                   base: Mapping[str, Any], what: str, dtype: torch.dtype, device: str) -> nn.Module:
    """Derive the config, size-check it against the part's own tensors, then read, convert and load them."""
    from safetensors import safe_open

    offline()
    shapes = {n[len(part.prefix):]: header[n].shape for n in names}
    try:
        config = part.layout.config(shapes, base, {n: h.shape for n, h in header.items()})
    except (KeyError, ValueError, TypeError, IndexError, ZeroDivisionError) as error:
        raise CheckpointError(f"{what}: the tensors do not form a {part.layout.class_name} "
                              f"({type(error).__name__}: {error})") from None
    elements = sum(math.prod(header[n].shape) for n in names)
    limit = elements + elements // 8 + (1 << 20)  # as loading.check_size: tied weights, unsaved buffers
    if os.environ.get(MAX_PARAMETERS_ENV, "").strip():
        limit = min(limit, max_parameters())
    build_on_meta(lambda: part.layout.build(config), f"{str(file)!r}", what, limit, 2 * len(names) + 64)
    with _parameters_on_meta():
        model = part.layout.build(config)
    with safe_open(str(file), framework="pt", device="cpu") as handle:
        tensors = {n[len(part.prefix):]: _weights(handle.get_tensor(n), dtype) for n in names}
    try:
        state = part.layout.convert(tensors, model)
        model.load_state_dict(state, strict=True, assign=True)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{what}: the file's tensors do not fit the model: {error}") from None
    model.to(dtype)
    if dtype == torch.float16:  # as from_pretrained: modules that overflow in float16 stay float32 (T5's wo)
        for name, param in model.named_parameters():
            if set(name.split(".")) & set(getattr(model, "_keep_in_fp32_modules", None) or ()):
                param.data = param.data.float()
    return model.requires_grad_(False).eval().to(device)


def _from_file(checkpoint: Checkpoint, part: str, config: Path | None, dtype: torch.dtype, device: str) -> nn.Module:
    layout = checkpoint.plan.parts[part]
    what = f"{part} ({layout.layout.class_name}) of {str(checkpoint.file)!r}"
    return load_file_part(checkpoint.file, checkpoint.header, checkpoint.tensors_of(part), layout,
                          base_config(checkpoint.plan, part, config), what, dtype, device)


def scheduler_path(checkpoint: Checkpoint, prediction: str) -> tuple[GaussianPath, str]:
    """The family's shipped scheduler as a path, and the prediction: the input's, else what the file marks,
    else the scheduler's. Transformers (SD3, Flux) predict velocity and accept only "auto"."""
    plan = checkpoint.plan
    path, scheduled = path_from_scheduler(read_json(plan.configs / plan.scheduler, "shipped scheduler config"))
    if scheduled == "velocity":
        if prediction != "auto":
            raise ValueError(f"input 'prediction': {checkpoint.family.name} predicts flow velocity; leave it on auto")
        return path, scheduled
    if prediction == "auto":
        return path, plan.prediction or scheduled
    return path, prediction


def load_file_backbone(checkpoint: Checkpoint, prediction: str, config: Path | None, dtype: torch.dtype,
                       device: str) -> tuple[Backbone, GaussianPath]:
    """The denoiser of a checked file as our BACKBONE on its family's path."""
    path, predicts = scheduler_path(checkpoint, prediction)
    model = _from_file(checkpoint, checkpoint.plan.denoiser, config, dtype, device)
    backbone = checkpoint.family.make_backbone(model, path, predicts)
    return pretrained(backbone, path, checkpoint.family.name, str(checkpoint.file)), path


def load_vae(value: str | None, checkpoint: Checkpoint, config: Path | None, dtype: torch.dtype,
             device: str) -> DiffusersVAE:
    """The `vae` input (a VAE folder, a pipeline folder, an original-layout VAE file), else the file's own."""
    if value is None:
        return DiffusersVAE(_from_file(checkpoint, "vae", config, dtype, device))
    path = Path(value).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return DiffusersVAE(load_part(path, read_index(path), "vae", dtype, device))
        return DiffusersVAE(diffusers_component(path, "AutoencoderKL", f"input 'vae' {value!r}", dtype, device))
    file = checkpoint_file(value, "input 'vae'")
    header = safetensors_header(file)
    prefix = next((p for p in ("first_stage_model.", "vae.", "") if p + "encoder.conv_in.weight" in header), None)
    if prefix is None:
        raise CheckpointError(f"input 'vae': {str(file)!r} holds no original-layout VAE (no encoder.conv_in.weight); "
                              "a diffusers VAE goes in as its folder (config.json + .safetensors)")
    names = [n for n in header if n.startswith(prefix)]
    return DiffusersVAE(load_file_part(file, header, names, FilePart(LDM_VAE, prefix),
                                       base_config(checkpoint.plan, "vae", config), f"VAE {str(file)!r}", dtype,
                                       device))


def load_tokenizers(value: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """The tokenizers the file's text encoders need, from the `tokenizers` folder's tokenizer*/ folders."""
    needed = checkpoint.plan.tokenizers
    folders = ", ".join(f"{part}/" for part in needed)
    family = checkpoint.family.name
    folder = local_folder(value, "input 'tokenizers'")
    index = read_index(folder) if (folder / "model_index.json").is_file() else {}
    found = {}
    for part, default in needed.items():
        if not (folder / part).is_dir():
            raise ModelFolderError(f"input 'tokenizers': {str(folder)!r} has no {part}/ folder; {family} needs "
                                   f"{folders} (any diffusers {family} pipeline folder has them)")
        entry = index.get(part)
        name = entry[1] if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str) else default
        found[part] = tokenizer(folder / part, name, f"{part} of {str(folder)!r}")
    return found


def text_encoder_folder(value: str, checkpoint: Checkpoint, families: Mapping[str, ModelFamily]
                        ) -> tuple[Path, dict[str, Any]]:
    """The `text_encoders` pipeline folder and its model_index, which must be of the file's family."""
    folder = local_folder(value, "input 'text_encoders'")
    index = read_index(folder)
    other = family_for(index, families, f"input 'text_encoders' {str(folder)!r}")
    if other.name != checkpoint.family.name:
        raise CheckpointError(f"input 'text_encoders': {str(folder)!r} is a {other.name} pipeline, the file a "
                              f"{checkpoint.family.name} model")
    return folder, index


def load_text_encoder(checkpoint: Checkpoint, source: dict[str, Any] | tuple[Path, dict[str, Any]],
                      config: Path | None, dtype: torch.dtype, device: str) -> Any:
    """The family's text encoder from `source`: the loaded tokenizers (the encoders then come from the file)
    or a (pipeline folder, model_index) pair (`text_encoder_folder`)."""
    family = checkpoint.family
    if isinstance(source, tuple):
        folder, index = source
        return family.make_encoder({p: load_part(folder, index, p, dtype, device) for p in family.text_parts}, index)
    parts = dict(source)
    for part in family.text_parts:
        if part.startswith("text_encoder") and part in checkpoint.plan.parts:
            parts[part] = _from_file(checkpoint, part, config, dtype, device)
    return family.make_encoder(parts, {})


def check_extras(checkpoint: Checkpoint, tokenizers: str | None, text_encoders: str | None, vae: str | None) -> None:
    """Say what the file lacks, and which input supplies it, before anything loads."""
    family, parts, file = checkpoint.family.name, checkpoint.plan.parts, str(checkpoint.file)
    if vae is None and "vae" not in parts:
        raise ModelFolderError(f"{file!r} holds no VAE: set input 'vae' to a VAE folder, a {family} pipeline folder "
                               "or an original-layout VAE .safetensors")
    if text_encoders is not None:
        return
    needed = [p for p in checkpoint.family.text_parts if p.startswith("text_encoder")
              and p not in checkpoint.family.optional_parts]
    missing = [p for p in needed if p not in parts]
    if missing:
        raise ModelFolderError(f"{file!r} holds no {', '.join(missing)} (a denoiser-only {family} file?): set input "
                               f"'text_encoders' to a diffusers {family} pipeline folder")
    if tokenizers is None:
        folders = ", ".join(f"{part}/" for part in checkpoint.plan.tokenizers)
        raise ModelFolderError(f"{file!r} holds {family} text encoders but no tokenizers (single files never do): "
                               f"set input 'tokenizers' to a folder holding {folders}, such as any diffusers {family} "
                               "pipeline folder")


def load_checkpoint(value: str, families: Mapping[str, ModelFamily], dtype: torch.dtype, device: str, *,
                    tokenizers: str | None = None, text_encoders: str | None = None, vae: str | None = None,
                    config: str | None = None, prediction: str = "auto") -> Pipeline:
    """A single-file checkpoint (plus the folders it needs) as the four outputs of core/load_pipeline.
    Everything that can be checked without reading weights is checked before any part loads."""
    checkpoint = read_checkpoint(value, families)
    config_folder = local_folder(config, "input 'config'") if config is not None else None
    check_extras(checkpoint, tokenizers, text_encoders, vae)
    text = (text_encoder_folder(text_encoders, checkpoint, families) if text_encoders is not None
            else load_tokenizers(tokenizers or "", checkpoint))  # tokenizers set: check_extras said so
    backbone, path = load_file_backbone(checkpoint, prediction, config_folder, dtype, device)
    autoencoder = load_vae(vae, checkpoint, config_folder, dtype, device)
    encoder = load_text_encoder(checkpoint, text, config_folder, dtype, device)
    return Pipeline(checkpoint.family, backbone, autoencoder, encoder, path)

