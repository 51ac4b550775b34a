"""Primitive value nodes: a widget whose value feeds several inputs through links."""

from typing import Annotated

from pydantic import Field

from nodegraph import JSON, Widget, node


@node("core/int", category="primitives", display_name="Integer")
def int_value(value: int = 0) -> int:
    """An integer constant."""
    return value


@node("core/float", category="primitives", display_name="Float")
def float_value(value: float = 0.0) -> float:
    """A floating-point constant."""
    return float(value)


@node("core/string", category="primitives", display_name="String")
def string_value(value: Annotated[str, Widget(kind="multiline")] = "") -> str:
    """A text constant (prompts, file names)."""
    return value


@node("core/bool", category="primitives", display_name="Boolean")
def bool_value(value: bool = False) -> bool:
    """A true/false constant."""
    return value


@node("core/seed", category="primitives", display_name="Seed")
def seed(seed: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0) -> int:
    """A random seed. Link it into every node that should change together with it."""
    return seed


@node("core/json", category="primitives", display_name="JSON value")
def json_value(value: JSON = None) -> JSON:
    """Any JSON value: lists (shapes, custom time grids) or objects."""
    return value
