"""Nodes that make vector fields: a backbone read on its path, and a field with a fixed condition."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from nodegraph import Context, node

from .fields import BoundField, ModelField
from .models.training_info import training_info
from .parameterization import DEFAULT_CLIP
from .paths import GaussianPath, path_from_config
from .sockets import BACKBONE, CONDITIONING, MODEL_FIELD, PATH, VECTOR_FIELD


def recorded_path(backbone: Any, kinds: dict[str, GaussianPath] | None = None) -> GaussianPath | None:
    """The path a backbone was trained on, from its training facts (None if not recorded)."""
    info = training_info(backbone)
    config = info.path if info is not None else None
    return path_from_config(config, kinds or None) if config else None


@node("core/model_field", category="fields", display_name="Model → vector field", outputs=("vector_field",))
def model_field(ctx: Context, backbone: BACKBONE, path: PATH = None,
                prediction: Literal["auto", "velocity", "epsilon", "x0", "score", "v"] = "auto",
                clip: Annotated[float, Field(gt=0, le=0.1)] = DEFAULT_CLIP) -> MODEL_FIELD:
    """Read a backbone's output as a velocity on its probability path: the path recorded in its checkpoint
    unless `path` is linked (a linked path that contradicts the recorded one is an error). auto: the
    backbone's own `prediction`. Conversions: u = alpha' x0 + beta' eps with x = alpha x0 + beta eps,
    score = -eps/beta; divisions by alpha (t -> 0) or beta (t -> 1) use max(., clip)."""
    recorded = recorded_path(backbone, ctx.components("path"))
    if path is None:
        if recorded is None:
            raise ValueError("input 'path': this backbone records no training path (it was not loaded from a "
                             "checkpoint that has one); link a PATH")
        path = recorded
    elif recorded is not None and recorded != path:
        raise ValueError(f"input 'path': the linked path {path!r} contradicts the path this backbone was trained "
                         f"on, {recorded!r}; unlink 'path' to use the recorded one")
    kind = getattr(backbone, "prediction", "velocity") if prediction == "auto" else prediction
    return ModelField(backbone, path, kind, clip)


@node("core/condition_field", category="fields", display_name="Condition field")
def condition_field(field: VECTOR_FIELD, conditioning: CONDITIONING) -> VECTOR_FIELD:
    """Bind a condition to a field without guidance: u(x, t | c), one forward pass per evaluation."""
    return BoundField(field, conditioning)
