"""The plugin's nodes: a new fourier_mlp backbone and its checkpoint loader."""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from nodegraph import Context, InputPath, node
from nodes.api import MLP, CheckpointError, Prediction, Seed, load_model, read_metadata

from .fourier_mlp import FourierMLP


@node("backbone_example/fourier_mlp", category="models", display_name="Fourier MLP (new)")
def fourier_mlp(ctx: Context, dim: Annotated[int, Field(ge=1, le=4096)] = 2,
                hidden: Annotated[int, Field(ge=4, le=1024)] = 64,
                depth: Annotated[int, Field(ge=1, le=16)] = 2,
                frequencies: Annotated[int, Field(ge=1, le=512)] = 16,
                scale: Annotated[float, Field(gt=0, le=100)] = 1.0,
                num_classes: Annotated[int, Field(ge=0, le=100000)] = 0,
                prediction: Prediction = "velocity", seed: Seed = 0) -> MLP:
    """An untrained Fourier-feature MLP f(x, t, y) for (B, D) points: phi(x) = [cos 2 pi xB, sin 2 pi xB] with
    B ~ N(0, scale^2), gated residual blocks h + W2(silu(W1 h)(1 + g(e))). num_classes > 0: null id = num_classes.
    Weights drawn from `seed`; train it with core/train_flow_matching."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FourierMLP(dim, hidden, depth, frequencies, scale, num_classes or None, prediction)
    return model.to(ctx.device)


@node("backbone_example/load_fourier_mlp", category="models", display_name="Load Fourier MLP")
def load_fourier_mlp(ctx: Context, file: InputPath) -> MLP:
    """Rebuild a fourier_mlp from a nodegraph .safetensors checkpoint (weights + JSON metadata with its config);
    a checkpoint of another architecture is refused with its name. Pickle files are never loaded."""
    architectures = ctx.components("architecture")
    arch = read_metadata(file, architectures)["arch"]
    if arch != FourierMLP.arch:
        raise CheckpointError(f"{file!r} holds a {arch!r} backbone, not a {FourierMLP.arch!r}; use core/load_backbone")
    return load_model(file, ctx.device, kind="backbone", architectures=architectures)
