"""Shared `Annotated` input types, so a bound is spelled once (and the same everywhere in the editor)."""

from typing import Annotated, Literal

from pydantic import Field

Seed = Annotated[int, Field(ge=0, description="Random seed; the same seed gives the same numbers.")]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
"""A number in [0, 1]: a time t, a fraction of the steps, a strength."""
Steps = Annotated[int, Field(ge=1, le=10000, description="Number of solver steps.")]
GuidanceScale = Annotated[float, Field(ge=0, le=30, description="Guidance weight w (1 = no guidance).")]
Prediction = Literal["velocity", "epsilon", "x0"]
"""What a network predicts: the velocity u, the noise eps or the data x0 (converted exactly on the path)."""
