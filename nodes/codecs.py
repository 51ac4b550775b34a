"""Disk-cache codecs of the built-in library: torch tensors (TENSOR, IMAGE, LATENT, TIME_GRID...) and
CONDITIONING. Registered as "codec" components (see `nodegraph.codecs`); the engine itself knows no torch.

A tensor is stored as one raw array in its own dtype (exact bytes, so a round trip is bit-identical),
with whether it lived on the run's device or on the CPU and whether it required grad; it comes back
contiguous, on the run's device if it was on a device. A Condition is its fields, each a stored value.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import torch

from nodegraph.codecs import Decoder, Encoder, NotStorable

from .conditioning import Condition

DTYPE_NAMES = {torch.bool: "BOOL", torch.uint8: "U8", torch.int8: "I8", torch.int16: "I16", torch.uint16: "U16",
               torch.int32: "I32", torch.uint32: "U32", torch.int64: "I64", torch.uint64: "U64",
               torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
               torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
DTYPES = {name: dtype for dtype, name in DTYPE_NAMES.items()}


class TensorCodec:
    """A strided, non-quantized torch.Tensor of a safetensors dtype (exactly torch.Tensor: a Parameter
    or another subclass is not stored as a plain tensor)."""

    name = "torch.tensor"
    types = (torch.Tensor,)

    def encode(self, value: torch.Tensor, out: Encoder) -> dict[str, Any]:
        dtype = DTYPE_NAMES.get(value.dtype)
        if (dtype is None or value.layout != torch.strided or value.is_quantized or value.device.type == "meta"
                or sys.byteorder != "little"):
            raise NotStorable(f"tensor of {value.dtype} {value.layout} on {value.device}")
        cpu = value.detach().to("cpu").contiguous()
        data = memoryview(cpu.reshape(-1).view(torch.uint8).numpy())  # no copy of a contiguous CPU tensor
        return {"array": out.array(dtype, cpu.shape, data),
                "device": "cpu" if value.device.type == "cpu" else "run",
                "requires_grad": bool(value.requires_grad)}

    def decode(self, data: Mapping[str, Any], src: Decoder) -> torch.Tensor:
        array = src.array(data["array"])
        dtype = DTYPES[array.dtype]
        if len(array.data):
            tensor = torch.frombuffer(bytearray(array.data), dtype=dtype).reshape(array.shape)
        else:
            tensor = torch.empty(array.shape, dtype=dtype)
        if data["device"] == "run" and src.device != "cpu":
            tensor = tensor.to(src.device)
        if data["requires_grad"] is True:
            tensor.requires_grad_(True)
        return tensor


class ConditionCodec:
    """A Condition: every dataclass field as a stored value (tensors, prompts, extras by name)."""

    name = "core.condition"
    types = (Condition,)

    def encode(self, value: Condition, out: Encoder) -> dict[str, Any]:
        fields = {}
        for field in dataclasses.fields(value):
            item = getattr(value, field.name)
            if isinstance(item, Mapping) and type(item) is not dict:  # extras: any mapping, stored as a dict
                item = dict(item)
            fields[field.name] = out.value(item)
        return fields

    def decode(self, data: Mapping[str, Any], src: Decoder) -> Condition:
        return Condition(**{name: src.value(tree) for name, tree in data.items()})


BUILTIN_CODECS = (TensorCodec(), ConditionCodec())
"""Registered as ("codec", name) components by the built-in library."""
