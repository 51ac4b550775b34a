"""Model checkpoints: safetensors weights + JSON metadata in the file header; never pickle.

The metadata (key "nodegraph" of the safetensors header) names the architecture and its config,
so loading rebuilds the module from the registered architectures (the registry's ("architecture", name)
components; the built-in ones when called outside a run) and then fills in the weights:
{"format": "nodegraph/model", "version": 1, "kind": "backbone" | "classifier" | "vae", "arch": "unet",
 "config": {...}, "prediction": "velocity", "conditioning": "class" | "text" | "none",
 "training": {"path": {...}, "dataset": {...}, "steps": 2000, ...}}  (see `TrainingInfo`).
Every model kind, the VAE included, is saved and loaded by this one module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nodegraph import Context, InputPath, OutputPath, atomic_path, node

from ..sockets import BACKBONE, CLASSIFIER
from .architectures import Architecture, builtin_architectures
from .training_info import TrainingInfo, training_info, with_training_info

FORMAT = "nodegraph/model"
VERSION = 1
META_KEY = "nodegraph"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")

Architectures = Mapping[str, Architecture] | None
"""Architecture name -> Architecture (class + kind); None or empty: the built-in ones."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: not safetensors, no or bad metadata, weights not matching."""


def _known(architectures: Architectures) -> Mapping[str, Architecture]:
    return architectures or builtin_architectures()


def conditioning_kind(model: nn.Module) -> str:
    """'text' if the model cross-attends to tokens, 'class' if it embeds labels, else 'none'."""
    config = getattr(model, "config", {})
    if config.get("context_dim") or config.get("pooled_dim"):
        return "text"
    if config.get("num_classes") and getattr(model, "arch", "") != "classifier":
        return "class"
    return "none"


def model_metadata(model: nn.Module, training: TrainingInfo | None = None,
                   architectures: Architectures = None) -> dict[str, Any]:
    """The JSON metadata stored with `model`'s weights; `training` defaults to `training_info(model)`."""
    training = training or training_info(model)
    known = _known(architectures)
    arch = getattr(model, "arch", None)
    if arch not in known or not isinstance(getattr(model, "config", None), dict):
        raise TypeError(f"{type(model).__name__} is not a registered architecture with a config "
                        f"(known: {sorted(known)})")
    return {"format": FORMAT, "version": VERSION, "kind": known[arch].kind, "arch": arch,
            "config": model.config, "prediction": getattr(model, "prediction", None),
            "conditioning": conditioning_kind(model), "training": training.to_json() if training else {}}


def _check_path(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{str(path)!r}: {path.suffix} files are pickles, which are never loaded; "
                              "convert the weights to .safetensors")
    if path.suffix.lower() != ".safetensors":
        raise CheckpointError(f"{str(path)!r}: a checkpoint must be a .safetensors file")


def save_model(model: nn.Module, path: str | Path, training: TrainingInfo | None = None,
               architectures: Architectures = None) -> Path:
    """Write weights + metadata atomically (`nodegraph.atomic_path`: temp file, fsync, rename).

    `training` (default: the model's attached `training_info`) becomes the metadata's "training".
    """
    path = Path(path).expanduser()
    _check_path(path)
    meta = model_metadata(model, training, architectures)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as temp:
        save_file(tensors, temp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return path


def read_metadata(path: str | Path, architectures: Architectures = None) -> dict[str, Any]:
    """The checkpoint's metadata, validated (format, kind, known arch, config a dict)."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    _check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    if META_KEY not in header and header.get("kind") != "vae":
        raise CheckpointError(f"{str(path)!r} has no nodegraph metadata (was it saved by nodegraph?)")
    try:
        meta = json.loads(header[META_KEY]) if META_KEY in header else legacy_vae_metadata(header)
    except (KeyError, TypeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{str(path)!r}: metadata is not valid JSON: {error!r}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r}: metadata format is not {FORMAT!r}")
    known = _known(architectures)
    if meta.get("arch") not in known:
        raise CheckpointError(f"{str(path)!r}: unknown architecture {meta.get('arch')!r} "
                              f"(known: {sorted(known)}; a plugin may provide it)")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{str(path)!r}: metadata has no config object")
    return meta


def legacy_vae_metadata(header: dict[str, str]) -> dict[str, Any]:
    """Metadata of a VAE file written before VAEs used this format: flat header strings
    {"kind": "vae", "arch", "config": JSON string, "scaling_factor": repr(float)}; same tensor names.
    Loading converts it; `save_model(load_model(old, kind="vae"), new)` rewrites a file in this format."""
    config = {**json.loads(header["config"]), "scaling_factor": float(header["scaling_factor"])}
    return {"format": FORMAT, "version": VERSION, "kind": "vae", "arch": header["arch"], "config": config,
            "prediction": None, "conditioning": "none", "training": {}}


def load_model(path: str | Path, device: str = "cpu", kind: str | None = None,
               architectures: Architectures = None) -> nn.Module:
    """Rebuild the module named by the metadata, load its weights strictly, move to `device`, eval mode."""
    meta = read_metadata(path, architectures)
    architecture = _known(architectures)[meta["arch"]]
    cls, arch_kind = architecture.cls, architecture.kind
    if kind is not None and arch_kind != kind:
        raise CheckpointError(f"{str(path)!r} holds a {arch_kind} ({meta['arch']}), not a {kind}")
    try:
        model = cls(**meta["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r}: config does not build a {meta['arch']}: {error}") from error
    tensors = load_file(str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(f"{label}: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"
                            for label, names in (("missing", missing), ("unexpected", unexpected),
                                                 ("wrong shape", wrong)) if names)
        raise CheckpointError(f"{str(path)!r}: weights do not match the metadata's {meta['arch']} config ({details})")
    model.load_state_dict(tensors, strict=True)
    with_training_info(model, TrainingInfo.from_json(meta.get("training") or {}))
    model.eval().requires_grad_(False)
    return model.to(device)


def bundled_path(name: str) -> Path:
    """nodes/weights/<name>.safetensors, with a clear error when it has not been trained/shipped."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"bundled model {name!r} is missing ({path}); train it with the workflows in "
                                "workflows/train_*.json")
    return path


BUNDLED_BACKBONES = Literal["digits_cfg_unet", "shapes_t2i"]
BUNDLED_CLASSIFIERS = Literal["digits_noisy_classifier", "digits_clean_classifier"]


def _output_path(ctx: Context, filename: str) -> Path:
    """The checkpoint file under the output folder (never outside it: see `Context.output_path`)."""
    if not filename.endswith(".safetensors"):
        raise ValueError(f"filename {filename!r} must end in .safetensors")
    return ctx.output_path(filename)


@node("core/save_backbone", category="models", display_name="Save backbone", outputs=("path",),
      side_effect=True, output_node=True)
def save_backbone(ctx: Context, backbone: BACKBONE, filename: OutputPath = "backbone.safetensors") -> str:
    """Write the backbone as .safetensors with its architecture, config and training facts as JSON metadata
    (atomically; `filename` is relative to the run's output folder, which it may not leave)."""
    return str(save_model(backbone, _output_path(ctx, filename), architectures=ctx.components("architecture")))


@node("core/save_classifier", category="models", display_name="Save classifier", outputs=("path",),
      side_effect=True, output_node=True)
def save_classifier(ctx: Context, classifier: CLASSIFIER, filename: OutputPath = "classifier.safetensors") -> str:
    """Write the classifier as .safetensors + JSON metadata (atomically)."""
    return str(save_model(classifier, _output_path(ctx, filename), architectures=ctx.components("architecture")))


@node("core/load_backbone", category="models", display_name="Load backbone")
def load_backbone(ctx: Context, file: InputPath) -> BACKBONE:
    """Rebuild a backbone from a nodegraph .safetensors checkpoint (metadata names the architecture).
    Pickle formats (.pt, .ckpt) are refused."""
    return load_model(file, ctx.device, kind="backbone", architectures=ctx.components("architecture"))


@node("core/load_classifier", category="models", display_name="Load classifier")
def load_classifier(ctx: Context, file: InputPath) -> CLASSIFIER:
    """Rebuild a noisy classifier p_t(y|x) from a nodegraph .safetensors checkpoint."""
    return load_model(file, ctx.device, kind="classifier", architectures=ctx.components("architecture"))


@node("core/bundled_backbone", category="models", display_name="Bundled backbone")
def bundled_backbone(ctx: Context, name: BUNDLED_BACKBONES = "digits_cfg_unet") -> BACKBONE:
    """A model shipped with nodegraph. digits_cfg_unet: 16x16 class-conditional digits U-Net, CondOT path,
    velocity prediction, trained with label dropout (null label 10) for classifier-free guidance."""
    return load_model(bundled_path(name), ctx.device, kind="backbone")


@node("core/bundled_classifier", category="models", display_name="Bundled classifier")
def bundled_classifier(ctx: Context, name: BUNDLED_CLASSIFIERS = "digits_noisy_classifier") -> CLASSIFIER:
    """A classifier shipped with nodegraph. digits_noisy_classifier: p_t(y|x_t) on the CondOT path (for
    classifier guidance); digits_clean_classifier: trained on clean digits (t = 1), to score samples."""
    return load_model(bundled_path(name), ctx.device, kind="classifier")
