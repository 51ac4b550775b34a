"""The static part of a node's cache key: its type, version and *coerced* widget values.

The key is built from what the node will receive, not from how the JSON spelled it: `4` and `4.0`
on a float input, or an omitted input and its explicit default, are the same call and share a key.
Different values must still differ, so the encoding is injective over what coercion can produce:
JSON keeps `1`, `1.0` and `true` apart; floats are written with `repr` (shortest round-trip, so
two distinct floats never print alike, and `-0.0`, `nan`, `inf` have their own spelling);
containers carry a tag, so a list, a tuple, a dict and a set with the same items do not collide,
and dict keys keep their type (`{1: x}` is not `{"1": x}`).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from pathlib import PurePath
from typing import Any


def _float(value: float) -> Any:
    if math.isfinite(value):
        return value
    return ["F", "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")]


def canonical(value: Any) -> Any:
    """A JSON-encodable form of `value` that two values share only when they are the same value."""
    if value is None or type(value) in (bool, int, str):
        return value
    if type(value) is float:
        return _float(value)
    if isinstance(value, list):
        return ["L", *(canonical(item) for item in value)]
    if isinstance(value, tuple):
        return ["T", *(canonical(item) for item in value)]
    if isinstance(value, dict):
        pairs = [[canonical(k), canonical(v)] for k, v in value.items()]
        return ["D", *sorted(pairs, key=_encode)]
    if isinstance(value, (set, frozenset)):
        return ["S", *sorted((canonical(item) for item in value), key=_encode)]
    if isinstance(value, enum.Enum):
        return ["E", _type_name(value), canonical(value.value)]
    if isinstance(value, PurePath):
        return ["P", str(value)]
    dump = getattr(value, "model_dump", None)  # pydantic models: their fields, in JSON mode
    if callable(dump):
        return ["M", _type_name(value), canonical(dump(mode="json"))]
    # Anything else keys by type and repr: at worst a needless miss (a repr with an address), never a false hit
    # between values of different types.
    return ["O", _type_name(value), repr(value)]


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _encode(form: Any) -> str:
    return json.dumps(form, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(value: Any) -> str:
    """`canonical(value)` as compact JSON text: equal for two values exactly when they are the same value."""
    return _encode(canonical(value))


def static_digest(type_id: str, version: int, values: dict[str, Any]) -> bytes:
    """Digest of a node's type, version and coerced widget values (defaults included)."""
    body = _encode(canonical(values))
    return hashlib.blake2b(f"{type_id}\x00{version}\x00{body}".encode(), digest_size=16).digest()
