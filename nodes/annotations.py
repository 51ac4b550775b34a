"""Shared `Annotated` input types, so a bound is spelled once (and the same everywhere in the editor)."""

from typing import Annotated, Literal

from pydantic import Field

Seed = Annotated[int, Field(ge=0, description="Random seed; the same seed gives the same numbers.")]
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
"""A number in [0, 1]: a time t, a fraction of the steps, a strength."""
Steps = Annotated[int, Field(ge=1, le=10000, description="Number of solver steps.")]
GuidanceScale = Annotated[float, Field(ge=0, le=30, description="Guidance weight w (1 = no guidance).")]
Prediction = Literal["velocity", "epsilon", "x0", "v"]
"""What a network predicts: the velocity u, the noise eps, the data x0 or v = alpha eps - beta x0
(converted exactly on the path)."""

# Training hyper-parameters, shared by every trainer.
TrainingSteps = Annotated[int, Field(ge=1, le=1_000_000, description="Optimisation steps.")]
BatchSize = Annotated[int, Field(ge=1, le=4096)]
LearningRate = Annotated[float, Field(gt=0, le=1, description="Peak AdamW learning rate (warm-up, then cosine).")]
Dropout = Annotated[float, Field(ge=0, le=1, description="Probability of replacing the condition by the null one.")]
EmaDecay = Annotated[float, Field(ge=0, lt=1, description="Decay of the weight average returned (0: no average).")]
GradClip = Annotated[float, Field(ge=0, description="Global gradient-norm clip (0: off).")]
WeightDecay = Annotated[float, Field(ge=0)]
CheckpointEvery = Annotated[int, Field(ge=0, description="Write a checkpoint every N steps (0: only at the end).")]
