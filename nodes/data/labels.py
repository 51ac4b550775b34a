"""A batch of class labels as a condition (for sampling a grid of classes)."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import node

from ..conditioning import Condition
from ..sockets import CONDITIONING


@node("core/class_labels", category="guidance", display_name="Class labels (batch)")
def class_labels(labels: list[Annotated[int, Field(ge=0, le=100000)]] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],  # noqa: B006
                 repeat: Annotated[int, Field(ge=1, le=1024)] = 1,
                 interleave: bool = False) -> CONDITIONING:
    """Condition with labels listed `repeat` times: [0..9] x 2 -> 0..9, 0..9 (interleave: 0, 0, 1, 1, ...)."""
    if not labels:
        raise ValueError("give at least one label")
    tensor = torch.tensor(labels, dtype=torch.long)
    tensor = tensor.repeat_interleave(repeat) if interleave else tensor.repeat(repeat)
    return Condition(labels=tensor)
