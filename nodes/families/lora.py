"""LoRA on a loaded family's backbone and text encoders, leaving the cached models untouched.

A loaded model is a cached value shared by every later run, so it is never written. `with_parameters`
builds a copy-on-write twin instead: the modules on the way from the root to each adapted layer are
shallow-copied (their own parameter / submodule tables, same tensors), the adapted weights replaced by
W' = W + s * (alpha / r) * B A, and every other module and tensor shared with the base. The twin is an
ordinary module of the same classes (backbone adapter, diffusers model, text encoder), so everything
downstream, another LoRA node included, works on it unchanged; its extra memory is the adapted weights
alone, and no weight of the base is swapped even for the length of a call (runs may share the base).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Literal, NamedTuple

import torch
from pydantic import Field
from torch import nn

from nodegraph import Context, ModelPath, Widget, node

from ..sockets import BACKBONE, TEXT_ENCODER
from .adapters import DiffusersBackbone
from .lora_file import LoraError, LoraFile, LoraLayer, read_lora
from .text import FamilyTextEncoder

LORA_FILE_HELP = ("a LoRA .safetensors file for this model family (peft/diffusers or kohya layout); set it with "
                  "--set lora.file=/my/lora.safetensors")
BACKBONE_PART = {"sd": "unet", "sd3": "transformer", "flux": "transformer"}
"""The LoRA part that adapts each family's denoiser (diffusers' component name)."""
TEXT_PARTS = ("text_encoder", "text_encoder_2", "text_encoder_3")

Strength = Annotated[float, Field(ge=-4, le=4), Widget(kind="slider", step=0.05)]


def _shell(module: nn.Module) -> nn.Module:
    """A shallow copy of `module` with its own parameter, buffer and submodule tables (same tensors)."""
    twin = copy.copy(module)
    twin._parameters = copy.copy(module._parameters)
    twin._buffers = copy.copy(module._buffers)
    twin._modules = copy.copy(module._modules)
    return twin


def with_parameters(root: nn.Module, values: Mapping[str, torch.Tensor]) -> nn.Module:
    """A twin of `root` whose parameters named in `values` ("a.b.weight") are those tensors; every other
    parameter, buffer and module is shared with `root`, which is not modified."""
    twin = _shell(root)
    copies: dict[str, nn.Module] = {"": twin}
    for name, value in values.items():
        owner, _, leaf = name.rpartition(".")
        module, path = twin, ""
        for part in owner.split(".") if owner else ():
            path = f"{path}.{part}" if path else part
            if path not in copies:
                copies[path] = module._modules[part] = _shell(module._modules[part])
            module = copies[path]
        if leaf not in module._parameters:
            raise KeyError(f"{name!r} is not a parameter of {type(root).__name__}")
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    return twin


def _flat(name: str, weight: torch.Tensor, layer: LoraLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """B (out, r) and A (r, in * kh * kw) of a layer, checked against the model's weight W: a LoRA for
    another family or size is an error naming the layer and both shapes."""
    down = layer.down.reshape(layer.rank, -1)
    up = layer.up.reshape(layer.up.shape[0], -1)
    if not (up.shape[1] == layer.rank and up.shape[0] == weight.shape[0] and down.shape[1] == weight[0].numel()):
        raise LoraError(f"layer {name!r}: the model's weight is {tuple(weight.shape)} but the LoRA's up (B) "
                        f"{tuple(layer.up.shape)} times down (A) {tuple(layer.down.shape)} does not fit it; is "
                        "this LoRA for another model family or size?")
    return up, down


def adapted_weight(name: str, weight: torch.Tensor, layer: LoraLayer, strength: float) -> torch.Tensor:
    """W' = W + s * scale * B A in float32, cast back to W's dtype; B A is reshaped to W (conv kernels:
    A (r, in, kh, kw) flattened, B (out, r, 1, 1))."""
    up, down = _flat(name, weight, layer)
    flat = weight.reshape(weight.shape[0], -1).float()
    adapted = torch.addmm(flat, up.to(weight.device, torch.float32), down.to(weight.device, torch.float32),
                          alpha=strength * layer.scale)
    return adapted.reshape(weight.shape).to(weight.dtype)


def _resolve(model: nn.Module, module: str) -> tuple[str, nn.Parameter] | None:
    """The module's name in `model` and its weight; LoRAs of older transformers name CLIP's layers under
    "text_model.", which newer CLIPTextModels no longer have."""
    for name in dict.fromkeys((module, module.removeprefix("text_model."))):
        try:
            found = model.get_submodule(name)
        except AttributeError:
            continue
        weight = found._parameters.get("weight")
        if isinstance(weight, nn.Parameter):
            return name, weight
    return None


def adapted_parameters(model: nn.Module, prefix: str, part: str, layers: Mapping[str, LoraLayer],
                       strength: float, unmatched: list[str]) -> dict[str, torch.Tensor]:
    """{"<prefix><module>.weight": W'} for each of the LoRA part's layers found in `model` (none at strength 0,
    after checking the shapes all the same); "<part>.<module>" of those not found is added to `unmatched`."""
    values = {}
    for module, layer in layers.items():
        found = _resolve(model, module)
        if found is None:
            unmatched.append(f"{part}.{module}")
            continue
        name, weight = found
        if strength == 0:
            _flat(f"{part}.{name}", weight, layer)
        else:
            values[f"{prefix}{name}.weight"] = adapted_weight(f"{part}.{name}", weight, layer, strength)
    return values


def _report_unmatched(ctx: Context, lora: LoraFile, unmatched: list[str], policy: str) -> None:
    names = [*unmatched, *lora.unknown]
    if not names:
        return
    message = (f"{lora.path!r} ({lora.layout} layout): {len(names)} LoRA layer(s) match no layer of this model, "
               f"first: {', '.join(names[:5])}")
    if policy == "warn":
        ctx.warn(message + "; applied the others")
        return
    raise LoraError(message + ". Is it for another model family? (set unmatched=warn to apply the layers that "
                    "match)")


def _text_encoder_values(ctx: Context, lora: LoraFile, encoder: FamilyTextEncoder | None, strength: float,
                         unmatched: list[str]) -> dict[str, torch.Tensor]:
    """The adapted weights of the encoder's models (`text_encoder`, `text_encoder_2`, ... as the LoRA's parts
    are named); taken out of `lora.parts`. Without a linked encoder its layers are skipped with a warning."""
    layers = {part: lora.parts.pop(part) for part in TEXT_PARTS if part in lora.parts}
    if encoder is None:
        if layers:
            ctx.warn(f"{lora.path!r} also adapts the text encoder ({sum(map(len, layers.values()))} layers); link "
                     "'text_encoder' to apply them")
        return {}
    values: dict[str, torch.Tensor] = {}
    for part, part_layers in layers.items():
        model = getattr(encoder, part, None)
        if isinstance(model, nn.Module):
            values |= adapted_parameters(model, f"{part}.", part, part_layers, strength, unmatched)
        else:
            unmatched.extend(f"{part}.{module}" for module in part_layers)
    return values


class LoraParts(NamedTuple):
    backbone: BACKBONE
    text_encoder: TEXT_ENCODER


@node("core/apply_lora", category="models", display_name="Apply LoRA")
def apply_lora(ctx: Context, backbone: BACKBONE, file: Annotated[ModelPath, Field(description=LORA_FILE_HELP)],
               text_encoder: TEXT_ENCODER = None, strength: Strength = 1.0, strength_text: Strength = 1.0,
               unmatched: Literal["error", "warn"] = "error") -> LoraParts:
    """Apply a LoRA to a loaded family's backbone and (when linked) its text encoder:
    W' = W + strength * (alpha / r) * B A for each layer the file adapts (strength_text for the text
    encoder), on copy-on-write twins: the loaded model stays as it was, only the adapted weights take new
    memory, and changing a strength re-runs from this node. strength 0 leaves a part exactly as it was.
    Reads the peft/diffusers and kohya layouts (SD 1.x/2.x, SDXL, SD3, Flux). unmatched: a LoRA layer with
    no layer of that name in the model stops the run (error), or is reported and skipped (warn).
    Chain several of these nodes to apply several LoRAs."""
    if not isinstance(backbone, DiffusersBackbone):
        raise ValueError(f"input 'backbone': LoRAs apply to a loaded model family's backbone (core/load_pipeline, "
                         f"core/load_denoiser), got {type(backbone).__name__}; put core/accelerate after this node")
    if text_encoder is not None and not isinstance(text_encoder, FamilyTextEncoder):
        raise ValueError(f"input 'text_encoder': expected a loaded model family's text encoder, got "
                         f"{type(text_encoder).__name__}")
    lora = read_lora(file, backbone.family, getattr(backbone.model, "config", None))
    missing: list[str] = []
    denoiser = BACKBONE_PART[backbone.family]
    values = adapted_parameters(backbone.model, "model.", denoiser, lora.parts.pop(denoiser, {}), strength, missing)
    text_values = _text_encoder_values(ctx, lora, text_encoder, strength_text, missing)
    missing.extend(f"{part}.{module}" for part, layers in lora.parts.items() for module in layers)
    _report_unmatched(ctx, lora, missing, unmatched)
    patched = with_parameters(backbone, values) if values else backbone
    return LoraParts(patched, with_parameters(text_encoder, text_values) if text_values else text_encoder)
