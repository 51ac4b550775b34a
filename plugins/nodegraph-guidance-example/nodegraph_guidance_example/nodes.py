"""The plugin's node: adaptive projected guidance around any built-in VECTOR_FIELD."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph import node
from nodes.sockets import CONDITIONING, VECTOR_FIELD

from .apg import APGField


@node("guidance_example/apg", category="guidance", display_name="Adaptive projected guidance")
def apg(field: VECTOR_FIELD, cond: CONDITIONING, null: CONDITIONING,
        scale: Annotated[float, Field(ge=0, le=30)] = 4.0,
        eta: Annotated[float, Field(ge=0, le=1)] = 0.0,
        norm_threshold: Annotated[float, Field(ge=0)] = 0.0) -> VECTOR_FIELD:
    """APG: the CFG update in x0 space d = x0(u_c) - x0(u_null), capped at norm_threshold (0: no cap), split
    into d_par along x0(u_c) and d_perp; x0~ = x0_c + (w - 1)(d_perp + eta d_par). eta = 1 without a cap is
    CFG, u~ = (1 - w) u_null + w u_c. Needs a field with a Gaussian path (core/model_field, core/toy_field)."""
    return APGField(field, cond, null, scale, eta=eta, norm_threshold=norm_threshold or float("inf"))
