"""Codecs: how node outputs become JSON plus raw arrays, and back, for the disk cache.

A value is stored as a JSON tree. Plain values are themselves: None, bool, int, str, finite float,
list; the rest are one-key objects: `{"float": "nan"}`, `{"tuple": [...]}`, `{"dict": [[k, v], ...]}`
(keys of any storable type, order kept), and `{"codec": NAME, "data": ...}` for a value of a type that
a registered codec stores. A codec turns its value into JSON data, putting bulk numbers into raw
arrays (`Encoder.array`: safetensors dtype, shape, little-endian bytes), and calling `Encoder.value`
for nested values; decoding mirrors it. Types are matched exactly (`type(value)`), so a subclass is
not stored as its base (it may carry more than the base's codec knows of).

The engine knows no tensors: the built-in library registers the torch tensor and CONDITIONING codecs
as components of kind "codec" (`CODEC_COMPONENT`), and a plugin adds its own types the same way:

    registry.add_component("codec", "my_type", MyTypeCodec())

Anything without a codec (models, vector fields, solvers, text encoders...) is simply not stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

CODEC_COMPONENT = "codec"
"""Component kind of a codec (name: the codec's `name`, value: the codec)."""

MAX_DEPTH = 64
"""Deepest nesting of containers stored; deeper values are not stored (and never decoded)."""

ITEM_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""Bytes per element of each safetensors dtype an array may have."""


class NotStorable(Exception):
    """The value (or a part of it) has no codec, or its codec refuses it: the outputs are not stored."""


class CorruptEntry(ValueError):
    """A stored tree or array that is not what an encoder writes."""


class UnknownCodec(LookupError):
    """A stored value names a codec this process does not have (a plugin not loaded here)."""


@dataclass(frozen=True)
class Array:
    """Raw numbers: a safetensors dtype name ("F32", "BF16", "I64", "BOOL"...), a shape, and the
    row-major little-endian bytes (len(data) == prod(shape) * item size)."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes | memoryview

    def __post_init__(self) -> None:
        size = ITEM_SIZES.get(self.dtype)
        if size is None:
            raise CorruptEntry(f"unknown array dtype {self.dtype!r}")
        if any(type(n) is not int or n < 0 for n in self.shape):
            raise CorruptEntry(f"bad array shape {self.shape!r}")
        if len(self.data) != math.prod(self.shape) * size:
            raise CorruptEntry(f"array of {self.dtype}{list(self.shape)} holds {len(self.data)} bytes")


@runtime_checkable
class Codec(Protocol):
    """Stores values of `types` (exact types). `encode` returns JSON data (it may call `out.value` for
    nested values and `out.array` for bulk numbers, and raise `NotStorable` to refuse a value);
    `decode(data, src)` rebuilds the value, arrays placed on `src.device` where they live on a device."""

    name: str
    types: tuple[type, ...]

    def encode(self, value: Any, out: Encoder) -> Any: ...

    def decode(self, data: Any, src: Decoder) -> Any: ...


def codec_table(codecs: Iterable[Codec]) -> dict[type, Codec]:
    """Exact type -> codec; the first codec registered for a type wins (the built-ins load first)."""
    table: dict[type, Codec] = {}
    for codec in codecs:
        for kind in codec.types:
            table.setdefault(kind, codec)
    return table


class Encoder:
    """Builds one stored value: the JSON tree (`value`) and the arrays it refers to by name."""

    def __init__(self, codecs: Mapping[type, Codec]) -> None:
        self.codecs = codecs
        self.arrays: dict[str, Array] = {}
        self._depth = 0

    def array(self, dtype: str, shape: Iterable[int], data: bytes | memoryview) -> str:
        """Add raw numbers (any C-contiguous buffer: bytes, a numpy array's memoryview); returns the
        name the JSON data refers to them by."""
        name = str(len(self.arrays))
        self.arrays[name] = Array(dtype, tuple(shape), memoryview(data).cast("B"))
        return name

    def value(self, value: Any) -> Any:
        """The JSON tree of `value`; NotStorable when some part of it has no codec."""
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"float": repr(value)}
        if self._depth >= MAX_DEPTH:
            raise NotStorable(f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            if kind is list:
                return [self.value(item) for item in value]
            if kind is tuple:
                return {"tuple": [self.value(item) for item in value]}
            if kind is dict:
                return {"dict": [[self.value(k), self.value(v)] for k, v in value.items()]}
            codec = self.codecs.get(kind)
            if codec is None:
                raise NotStorable(f"no codec stores {kind.__module__}.{kind.__qualname__}")
            return {"codec": codec.name, "data": codec.encode(value, self)}
        finally:
            self._depth -= 1


class Decoder:
    """Rebuilds a stored value from its JSON tree and arrays, on `device`."""

    def __init__(self, codecs: Mapping[str, Codec], arrays: Mapping[str, Array], device: str = "cpu") -> None:
        self.codecs = codecs
        self.arrays = arrays
        self.device = device
        self._depth = 0

    def array(self, name: Any) -> Array:
        if type(name) is not str or name not in self.arrays:
            raise CorruptEntry(f"no array {name!r}")
        return self.arrays[name]

    def value(self, tree: Any) -> Any:
        kind = type(tree)
        if tree is None or kind in (bool, int, float, str):
            return tree
        if self._depth >= MAX_DEPTH:
            raise CorruptEntry(f"nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            if kind is list:
                return [self.value(item) for item in tree]
            if kind is dict:
                return self._tagged(tree)
            raise CorruptEntry(f"unexpected {kind.__name__} in a stored value")
        finally:
            self._depth -= 1

    def _tagged(self, tree: dict[str, Any]) -> Any:
        if tree.keys() == {"codec", "data"}:
            codec = self.codecs.get(tree["codec"]) if type(tree["codec"]) is str else None
            if codec is None:
                raise UnknownCodec(f"no codec {tree['codec']!r} in this process")
            return codec.decode(tree["data"], self)
        if len(tree) == 1:
            (tag, body), = tree.items()
            if tag == "float" and body in ("nan", "inf", "-inf"):
                return float(body)
            if tag == "tuple" and type(body) is list:
                return tuple(self.value(item) for item in body)
            if tag == "dict" and type(body) is list and all(type(p) is list and len(p) == 2 for p in body):
                return {self.value(k): self.value(v) for k, v in body}
        raise CorruptEntry(f"unexpected object with keys {sorted(tree)[:4]} in a stored value")
