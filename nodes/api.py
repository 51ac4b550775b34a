"""The generative vocabulary for plugins: import from here (and from `nodegraph`), nothing else.

Stable within `API_VERSION` (checked when a plugin declaring `NODEGRAPH_API_VERSION` loads).

Sockets      the registered socket types: TENSOR, IMAGE, MASK, LATENT, TIME_GRID, CONDITIONING, PATH,
             VECTOR_FIELD, MODEL_FIELD (a field straight from a backbone), SOLVER, GUIDANCE,
             SIGMA_SCHEDULE, BACKBONE (MLP, UNET, DIT), VAE, TEXT_ENCODER, CLASSIFIER, DATASET ...
Condition    what a network is conditioned on (labels / tokens + mask + pooled); `bind`, `cat`,
             `expand`, `select` are its methods.
Fields       `VectorField` and its contract (see nodes.fields): field(x, t (B,), cond) -> velocity;
             `path` and `clip` make x0 / eps / score predictions exact. Wrap a field with
             `FieldWrapper` (subclass) or `wrap_field(field, fn)`; `ModelField` reads a backbone.
Guidance     `ConditionPair(cond, null).evaluate(field, x, t)` runs cond and null in one batch;
             `cfg_combine(u_cond, u_null, w)` is CFG; `GuidanceMethod(name, combine)` registered as
             ("guidance", name) appears in core/cfg's `method`.
Solvers      `Solver(name, fn, options)` with fn following `SolverFn`; registered as ("solver", name)
             it appears in every sampling node's `method`; a node returning a configured Solver on
             the SOLVER socket links into `method` to set options.
Paths        `GaussianPath` (alpha, beta, d_alpha, d_beta, config); registered as ("path", name)
             it appears in core/path's `kind`. `convert` / `to_x0_eps` / `from_x0_eps` convert
             predictions exactly.
Architectures `Backbone` (an nn.Module with arch, config, prediction; forward(x, t, cond)) and
             `Architecture(cls, kind)` registered as ("architecture", cls.arch): the built-in
             checkpoint nodes then save and load it. Attention through `Attention` (swappable
             processors, see nodes.models.attention), or an `attention_sites()` method offering a
             foreign model's layers as sites, makes a backbone editable by prompt-to-prompt.
Families     `ModelFamily` registered as ("family", name): a pretrained pipeline family (its pipeline class
             names, denoiser folder, text parts, backbone and text-encoder makers, single-file reader)
             that core/load_pipeline and core/load_checkpoint then load (see docs/pretrained.md).
Aliases      Seed, Unit, Steps, GuidanceScale, Prediction and the training ones (TrainingSteps,
             BatchSize, LearningRate, Dropout, EmaDecay, GradClip, WeightDecay, CheckpointEvery):
             shared `Annotated` input types, so bounds are spelled once.

Register components in the `nodegraph_register_components` hook:

    @hookimpl
    def nodegraph_register_components(registry):
        registry.add_component("solver", "my_solver", Solver("my_solver", my_solver))
"""

from nodegraph import API_VERSION

from .annotations import (
    BatchSize,
    CheckpointEvery,
    Dropout,
    EmaDecay,
    GradClip,
    GuidanceScale,
    LearningRate,
    Prediction,
    Seed,
    Steps,
    TrainingSteps,
    Unit,
    WeightDecay,
)
from .broadcast import batch_times, expand_time
from .conditioning import Condition
from .families.family import ModelFamily
from .fields import CountingField, FieldWrapper, ModelField, VectorField, wrap_field
from .guidance import CFGField, CombineFn, ConditionPair, GuidanceMethod, cfg_combine
from .models.architectures import Architecture
from .models.attention import Attention, AttentionLayer, AttentionProcessor, AttentionSite, attention_processor
from .models.base import Backbone
from .models.checkpoint import CheckpointError, load_model, read_metadata, save_model
from .models.layers import class_labels, text_context, timestep_embedding
from .parameterization import convert, from_x0_eps, to_x0_eps
from .paths import GaussianPath
from .sockets import (
    BACKBONE,
    CLASSIFIER,
    CONDITIONING,
    DATASET,
    DIT,
    GUIDANCE,
    IMAGE,
    LATENT,
    MASK,
    MLP,
    MODEL_FIELD,
    PATH,
    SIGMA_SCHEDULE,
    SOLVER,
    TENSOR,
    TEXT_ENCODER,
    TIME_GRID,
    UNET,
    VAE,
    VECTOR_FIELD,
)
from .solvers import Callback, Solver, SolverFn

__all__ = [
    "API_VERSION", "Architecture", "Attention", "AttentionLayer", "AttentionProcessor", "AttentionSite", "BACKBONE",
    "Backbone", "BatchSize", "CFGField",
    "CheckpointEvery", "Dropout", "EmaDecay", "GradClip", "LearningRate", "TrainingSteps", "WeightDecay",
    "CLASSIFIER", "CONDITIONING", "Callback", "CheckpointError", "CombineFn", "Condition", "ConditionPair",
    "CountingField", "DATASET", "DIT", "FieldWrapper", "GUIDANCE", "GaussianPath", "GuidanceMethod",
    "GuidanceScale", "IMAGE", "LATENT", "MASK", "MLP", "MODEL_FIELD", "ModelField", "ModelFamily", "PATH", "Prediction",
    "SIGMA_SCHEDULE",
    "SOLVER", "Seed", "Solver", "SolverFn", "Steps", "TENSOR", "TEXT_ENCODER", "TIME_GRID", "UNET", "Unit", "VAE",
    "VECTOR_FIELD", "VectorField", "attention_processor", "batch_times", "cfg_combine", "class_labels", "convert",
    "expand_time", "from_x0_eps", "load_model", "read_metadata", "save_model", "text_context",
    "timestep_embedding", "to_x0_eps", "wrap_field",
]
