"""LoRA files: a `.safetensors` LoRA in any layout trainers write, read as low-rank layers per model part.

A LoRA gives, for each layer it adapts (weight W of shape (out, in) or (out, in, kh, kw)), a down matrix
A (r, in[, kh, kw]), an up matrix B (out, r[, 1, 1]) and a scale alpha / r, so the adapted weight is

    W' = W + s * (alpha / r) * B A        (s: the user's strength; alpha = r, a scale of 1, when unsaid)

Layouts, told apart by their key names:

- peft (diffusers' format today): "unet.<module>.lora_A.weight" / ".lora_B.weight", parts `unet`,
  `transformer`, `text_encoder`, `text_encoder_2`; alpha from the header's "lora_adapter_metadata" (the
  LoraConfig diffusers saves) or from "<module>.alpha" tensors, else alpha = r;
- diffusers (older names): "unet.<...>.attn1.processor.to_q_lora.down.weight", "<...>.lora.up.weight",
  "text_encoder.<...>.lora_linear_layer.down.weight";
- kohya: "lora_unet_<module, dots as underscores>.lora_down.weight", ".lora_up.weight", ".alpha";
  "lora_te_" (SDXL: "lora_te1_", "lora_te2_") for the text encoders; SD-original block names
  ("lora_unet_input_blocks_4_1_...") are renumbered from the U-Net's config.

Kohya names (and Flux's other community layouts) are translated by diffusers' own `lora_state_dict` of the
family's loader, so a file means here what it means in diffusers; the rest is read here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..models.checkpoint import CheckpointError

PARTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
"""The model parts a LoRA's keys may start with (diffusers' component names)."""

ROLES = (
    (".lora_A.weight", "down"), (".lora_B.weight", "up"),
    (".lora_down.weight", "down"), (".lora_up.weight", "up"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"),
    ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
)
"""Key endings naming a layer's down (A) or up (B) matrix, in the order they are tried."""

OLD_ATTENTION_NAMES = {
    "unet": {"to_out": "to_out.0"},
    "text_encoder": {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"},
}
"""Older diffusers files name attention projections "to_q_lora", "to_out_lora": the module they adapt."""

UNSUPPORTED = {"dora_scale": "DoRA", "lora_magnitude_vector": "DoRA", "hada_": "LoHa (LyCORIS)",
               "lokr_": "LoKr (LyCORIS)", ".lora_mid.": "LoCon with a mid weight (LyCORIS)"}
"""Key fragments of adapter kinds that are not a plain B A product; refused rather than misapplied."""

SGM_BLOCKS = ("input_blocks", "middle_block", "output_blocks")


class LoraError(CheckpointError):
    """A LoRA file that cannot be applied: not safetensors, an unknown layout, or not for this model."""


@dataclass(frozen=True)
class LoraLayer:
    """One adapted layer: down A (r, ...), up B (out, r, ...) and scale = alpha / r."""

    down: torch.Tensor
    up: torch.Tensor
    scale: float

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass
class LoraFile:
    """A LoRA read from `path`: its layers by model part and module name, and the keys of no known form."""

    path: str
    layout: str
    parts: dict[str, dict[str, LoraLayer]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)


def detect_layout(keys: list[str]) -> str:
    """The layout the key names follow (for messages; each layout is read by the same code below)."""
    if any(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in keys):
        if any(block in k for k in keys for block in SGM_BLOCKS):
            return "kohya (SD original block names)"
        return "kohya"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "peft (diffusers)"
    if any(end in k for k in keys for end in ("_lora.down.", ".lora.down.", ".lora_linear_layer.")):
        return "diffusers (older names)"
    return "unknown"


def read_tensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and header metadata of a .safetensors LoRA; any other file is refused unread."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    file = Path(path).expanduser()
    if file.is_dir():
        inside = sorted(p.name for p in file.glob("*.safetensors"))
        raise LoraError(f"{path!r} is a folder; set the LoRA file itself"
                        + (f" (it holds {', '.join(inside)})" if inside else ""))
    if not file.is_file():
        raise LoraError(f"no LoRA file {path!r}")
    if file.suffix != ".safetensors":
        raise LoraError(f"{path!r}: LoRAs load from .safetensors files only ({file.suffix or 'no suffix'} files "
                        "may be pickles, which nodegraph never loads); convert it to .safetensors")
    try:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise LoraError(f"{path!r}: not a readable safetensors file: {error}") from None


def _refuse_unsupported(path: str, keys: list[str]) -> None:
    for fragment, kind in UNSUPPORTED.items():
        found = next((k for k in keys if fragment in k), None)
        if found is not None:
            raise LoraError(f"{path!r} is a {kind} adapter (key {found!r}); only plain LoRA (W + B A) is supported")


def diffusers_names(tensors: dict[str, torch.Tensor], family: str, unet_config: Any = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Keys in diffusers' names ("<part>.<module>..."), and alphas by key, through the loader diffusers uses
    for this family (it translates kohya and community layouts and leaves the others as they are)."""
    from diffusers.loaders import FluxLoraLoaderMixin, SD3LoraLoaderMixin, StableDiffusionXLLoraLoaderMixin

    state = dict(tensors)  # the converters pop what they translate
    if family == "flux":
        state, alphas = FluxLoraLoaderMixin.lora_state_dict(state, return_alphas=True)
    elif family == "sd3":
        state, alphas = SD3LoraLoaderMixin.lora_state_dict(state), None
    else:
        state, alphas = StableDiffusionXLLoraLoaderMixin.lora_state_dict(state, unet_config=unet_config)
    return state, {k: float(v) for k, v in (alphas or {}).items()}


def _split(key: str) -> tuple[str, str, str] | None:
    """(part, module, role) of a diffusers-named key, role "down", "up" or "alpha"; None if of no known form."""
    part, _, rest = key.partition(".")
    if part not in PARTS or not rest:
        return None
    rest = rest.replace(".processor.", ".")
    role = "alpha" if rest.endswith(".alpha") else None
    if role:
        rest = rest.removesuffix(".alpha")
    for ending, kind in ROLES:
        if rest.endswith(ending):
            module = rest.removesuffix(ending)
            if ending.startswith("_lora."):
                head, _, last = module.rpartition(".")
                names = OLD_ATTENTION_NAMES["unet" if part in ("unet", "transformer") else "text_encoder"]
                module = f"{head}.{names.get(last, last)}" if head else names.get(last, last)
            return part, module, role or kind
    return (part, rest, "alpha") if role else None


def _metadata_scales(metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Per part, the LoraConfig fields diffusers saved in the header ("unet.lora_alpha", ...)."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    parts: dict[str, dict[str, Any]] = {}
    for key, value in config.items() if isinstance(config, dict) else ():
        part, _, name = key.partition(".")
        parts.setdefault(part, {})[name] = value
    return parts


def _configured_scale(config: Mapping[str, Any], module: str, rank: int) -> float | None:
    """alpha / r (alpha / sqrt r with rsLoRA) from a saved LoraConfig, alpha_pattern taken as peft takes it."""
    if "lora_alpha" not in config:
        return None
    from peft.utils.other import get_pattern_key

    pattern = config.get("alpha_pattern") or {}
    alpha = float(pattern.get(get_pattern_key(list(pattern), module), config["lora_alpha"]))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def _dropped_sd_original(keys: list[str]) -> list[str]:
    """The layers diffusers drops from a kohya file that mixes SD-original and diffusers block names (it keeps
    the diffusers ones), so they are reported as unmatched rather than lost without a word."""
    def original(key: str) -> bool:
        return any(block in key for block in SGM_BLOCKS)

    down = [k for k in keys if k.startswith("lora_unet_") and k.endswith(".lora_down.weight")]
    if all(map(original, down)) or not any(map(original, down)):
        return []
    return [k.removesuffix(".lora_down.weight") for k in down if original(k)]


def read_lora(path: str, family: str, unet_config: Any = None) -> LoraFile:
    """Read `path` into layers per part for a backbone of `family` ("sd", "sd3", "flux"); a down without its
    up (or the reverse) is an error naming the key."""
    tensors, metadata = read_tensors(path)
    keys = list(tensors)
    if not keys:
        raise LoraError(f"{path!r} holds no tensors")
    layout = detect_layout(keys)
    _refuse_unsupported(path, keys)
    try:
        state, alphas = diffusers_names(tensors, family, unet_config)
    except (ValueError, KeyError) as error:
        raise LoraError(f"{path!r} ({layout} layout): its keys cannot be translated to diffusers' names: "
                        f"{error}") from None
    found: dict[tuple[str, str], dict[str, Any]] = {}
    lora = LoraFile(path, layout, unknown=_dropped_sd_original(keys) if family == "sd" else [])
    for key, value in [*state.items(), *alphas.items()]:
        where = _split(key)
        if where is None:
            lora.unknown.append(key)
            continue
        part, module, role = where
        found.setdefault((part, module), {})[role] = float(value) if role == "alpha" else value
    configs = _metadata_scales(metadata)
    for (part, module), roles in found.items():
        if "down" not in roles or "up" not in roles:
            missing = "up (B)" if "down" in roles else "down (A)"
            raise LoraError(f"{path!r}: layer {part}.{module} has no {missing} matrix")
        rank = int(roles["down"].shape[0])
        scale = _configured_scale(configs.get(part, {}), module, rank)
        if scale is None:
            scale = roles.get("alpha", rank) / rank
        lora.parts.setdefault(part, {})[module] = LoraLayer(roles["down"], roles["up"], scale)
    return lora
