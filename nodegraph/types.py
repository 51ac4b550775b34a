"""Socket types: named, coloured, with single-parent subtyping.

A socket type is what travels on a link. Edges are type-checked before anything runs with
`can_connect(output_type, input_type)`: an output feeds an input when its type *is* the input's
type or one of its descendants (a UNET output feeds a BACKBONE input), or when either side is ANY.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, eq=False)
class SocketType:
    """One named socket type. Instances are used directly as annotations on node functions."""

    name: str
    py_class: type | tuple[type, ...] | None = None
    color: str = "#9e9e9e"
    parent: SocketType | None = None
    description: str = ""
    widget: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name.isupper():
            raise ValueError(f"socket type name {self.name!r} must be UPPER_CASE letters, digits and _")

    def is_subtype_of(self, other: SocketType) -> bool:
        node: SocketType | None = self
        while node is not None:
            if node is other or node.name == other.name:
                return True
            node = node.parent
        return False

    def lineage(self) -> list[str]:
        names, node = [], self
        while node is not None:
            names.append(node.name)
            node = node.parent
        return names

    def accepts_value(self, value: Any) -> bool:
        """Whether a runtime value fits this socket (py_class None means anything)."""
        if self.py_class is None:
            return True
        return isinstance(value, self.py_class)

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SocketType) and other.name == self.name

    def __repr__(self) -> str:
        return f"SocketType({self.name})"


ANY = SocketType("ANY", None, "#bdbdbd", description="Accepts or produces anything.")
INT = SocketType("INT", int, "#4db6ac", widget=True)
FLOAT = SocketType("FLOAT", (float, int), "#81c784", widget=True)
STRING = SocketType("STRING", str, "#ffb74d", widget=True)
BOOLEAN = SocketType("BOOLEAN", bool, "#ba68c8", widget=True)
JSON = SocketType("JSON", (dict, list, str, int, float, bool, type(None)), "#90a4ae", widget=True,
                  description="Any JSON value (lists, objects).")

BUILTIN_TYPES = (ANY, INT, FLOAT, STRING, BOOLEAN, JSON)


def can_connect(output_type: SocketType, input_type: SocketType) -> bool:
    """True when a value of `output_type` may feed an input declared as `input_type`."""
    if output_type.name == "ANY" or input_type.name == "ANY":
        return True
    if input_type.name == "FLOAT" and output_type.name == "INT":
        return True
    return output_type.is_subtype_of(input_type)
