"""The plugin's node: APG's options, linked into core/cfg's `method`."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from nodegraph import node
from nodes.api import GUIDANCE

from .apg import APG


@node("guidance_example/apg", category="guidance", display_name="Adaptive projected guidance")
def apg(eta: Annotated[float, Field(ge=0, le=1)] = 0.0,
        norm_threshold: Annotated[float, Field(ge=0)] = 0.0) -> GUIDANCE:
    """APG: the CFG update in x0 space d = x0(u_c) - x0(u_null), capped at norm_threshold (0: no cap), split
    into d_par along x0(u_c) and d_perp; x0~ = x0_c + (w - 1)(d_perp + eta d_par). eta = 1 without a cap is
    CFG. Link into core/cfg's `method` (its scale is w); the field needs a Gaussian path."""
    return APG.configured(eta=eta, norm_threshold=norm_threshold)


