"""Model checkpoints: safetensors weights + JSON metadata in the file header; never pickle.

The metadata (key "nodegraph" of the safetensors header) names the architecture and its config,
so loading rebuilds the module from the registered architectures (the registry's ("architecture", name)
components; the built-in ones when called outside a run) and then fills in the weights:
{"format": "nodegraph/model", "version": 1, "kind": "backbone" | "classifier" | "vae", "arch": "unet",
 "config": {...}, "prediction": "velocity", "conditioning": "class" | "text" | "none",
 "training": {"path": {...}, "dataset": {...}, "steps": 2000, ...}}  (see `TrainingInfo`).
Every model kind, the VAE included, is saved and loaded by this one module.

A checkpoint is untrusted input: its few bytes of metadata decide how big a module gets built.
`load_model` therefore checks everything it can from the file header alone before any real tensor
exists: the config's types and ranges (against the constructor's annotations), the parameter count
the config asks for (the module is built on the `meta` device, which allocates nothing, and the
build is stopped as soon as the count passes `max_parameters()`), that the config's tensor names
and shapes are exactly the file's, and the file's dtypes. Only then is the real module built.
"""

from __future__ import annotations

import inspect
import json
import math
import threading
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

from nodegraph import Context, InputPath, OutputPath, atomic_path, node, positive_env_number

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

MAX_PARAMETERS_ENV = "NODEGRAPH_MAX_PARAMETERS"
DEFAULT_MAX_PARAMETERS = 2_000_000_000
"""The most parameters (+ buffer elements) a checkpoint's config may ask for: 8 GB of float32,
far above any model this project trains, far below what takes a machine down. Raise it with
$NODEGRAPH_MAX_PARAMETERS (read at every load) or the `parameter_limit` argument of `load_model`."""

MAX_CONFIG_INT = 2**31 - 1
"""No size in an architecture config is larger than this (nor negative)."""

WEIGHT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
"""safetensors dtype names loaded as they are; any other dtype needs `allow_cast=True`."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded: not safetensors, no or bad metadata, weights not matching,
    a config too large or malformed, tensors of an unexpected dtype."""


def max_parameters() -> int:
    """The parameter limit in force: $NODEGRAPH_MAX_PARAMETERS (read now, so a test or a deployment can
    change it without re-importing) or DEFAULT_MAX_PARAMETERS. Accepts "2e9", "2_000_000_000"; a
    value that is not a number of at least 1 raises SettingError (a ValueError) naming the variable."""
    return int(positive_env_number(MAX_PARAMETERS_ENV, DEFAULT_MAX_PARAMETERS, "parameters", minimum=1))


@dataclass(frozen=True)
class TensorHeader:
    """One tensor as the safetensors header describes it (nothing loaded)."""

    shape: tuple[int, ...]
    dtype: str  # safetensors' name: "F32", "BF16", "I8", ...


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
    return _read_header(path, architectures)[0]


def _read_header(path: str | Path, architectures: Architectures = None
                 ) -> tuple[dict[str, Any], dict[str, TensorHeader]]:
    """The validated metadata and every tensor's shape and dtype, from the header only (no tensor is read)."""
    path = Path(path).expanduser()
    _check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            tensors = {name: TensorHeader(tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype())
                       for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file: {error}") from error
    if META_KEY not in header and header.get("kind") != "vae":
        raise CheckpointError(f"{str(path)!r} has no nodegraph metadata (was it saved by nodegraph?)")
    try:
        meta = json.loads(header[META_KEY]) if META_KEY in header else legacy_vae_metadata(header)
    except (KeyError, TypeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{str(path)!r}: metadata is not valid JSON: {error!r}") from error
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r}: metadata format is not {FORMAT!r}")
    known = _known(architectures)
    if meta.get("arch") not in known:
        raise CheckpointError(f"{str(path)!r}: unknown architecture {meta.get('arch')!r} "
                              f"(known: {sorted(known)}; a plugin may provide it)")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{str(path)!r}: metadata has no config object")
    return meta, tensors


def legacy_vae_metadata(header: dict[str, str]) -> dict[str, Any]:
    """Metadata of a VAE file written before VAEs used this format: flat header strings
    {"kind": "vae", "arch", "config": JSON string, "scaling_factor": repr(float)}; same tensor names.
    Loading converts it; `save_model(load_model(old, kind="vae"), new)` rewrites a file in this format."""
    config = {**json.loads(header["config"]), "scaling_factor": float(header["scaling_factor"])}
    return {"format": FORMAT, "version": VERSION, "kind": "vae", "arch": header["arch"], "config": config,
            "prediction": None, "conditioning": "none", "training": {}}


def _config_hints(cls: type) -> tuple[dict[str, Any], bool] | None:
    """The constructor's keyword arguments as pydantic fields (annotation, default) and whether it takes
    **kwargs; None when the annotations cannot be resolved (a plugin's: its config is then only range-checked)."""
    try:
        hints = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
    except Exception:  # noqa: BLE001 - unresolvable annotations of a plugin class
        return None
    fields: dict[str, Any] = {}
    var_keyword = False
    for param in params:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
    return fields, var_keyword


def _check_config_values(where: str, value: Any, key: str = "config", depth: int = 0) -> None:
    """Sizes are ints in [0, MAX_CONFIG_INT]; floats are finite; nesting stays shallow (a list of lists at most)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not 0 <= value <= MAX_CONFIG_INT:
            raise CheckpointError(f"{where}: config value {key} = {value} is out of range "
                                  f"(sizes in an architecture config are integers from 0 to {MAX_CONFIG_INT})")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"{where}: config value {key} = {value} is not a finite number")
    elif isinstance(value, (list, dict)):
        if depth >= 3:
            raise CheckpointError(f"{where}: config value {key} is nested too deeply")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for sub, item in items:
            _check_config_values(where, item, f"{key}.{sub}" if isinstance(value, dict) else f"{key}[{sub}]",
                                 depth + 1)
    else:
        raise CheckpointError(f"{where}: config value {key} has an unsupported type {type(value).__name__}")


def check_config(path: str | Path, arch: str, cls: type, config: dict[str, Any]) -> None:
    """Refuse a config whose values could not have come from `cls`: wrong types for the constructor's
    annotations (strictly: `true` is no int, "32" no size), unknown keys, negative or huge sizes, NaN.
    Runs before anything is built, so a malformed config fails with its key named."""
    where = f"{str(path)!r} ({arch})"
    for key, value in config.items():
        _check_config_values(where, value, key)
    hints = _config_hints(cls)
    if hints is None:
        return
    fields, var_keyword = hints
    model = pydantic.create_model(
        f"{cls.__name__}Config", __config__=pydantic.ConfigDict(
            strict=True, extra="allow" if var_keyword else "forbid", arbitrary_types_allowed=True), **fields)
    try:
        model.model_validate_json(json.dumps(config))
    except pydantic.ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors()[:4])
        raise CheckpointError(f"{str(path)!r}: config does not build a {arch}: {problems}") from None
    except Exception:  # noqa: BLE001 - a plugin annotation pydantic cannot check; the meta build still runs
        return


class _TooLarge(Exception):
    """Raised from inside a meta-device build to stop it as soon as it passes a limit."""


@contextmanager
def _counting_registrations(limit: int, max_tensors: int) -> Iterator[list[int]]:
    """Count the elements of every parameter and buffer registered by modules built in this thread, and
    stop the build (raise _TooLarge) once they pass `limit` or once more parameters are registered than
    `max_tensors` (a config asking for a million layers, of any size, stops after a few registrations
    past the file's tensor count instead of spending minutes building empty modules)."""
    thread = threading.get_ident()
    counts = [0, 0]  # elements, parameter registrations

    def count(tensor: torch.Tensor | None, parameter: bool) -> None:
        if tensor is None or threading.get_ident() != thread:
            return
        counts[0] += tensor.numel()
        counts[1] += parameter
        if counts[0] > limit:
            raise _TooLarge(f"at least {counts[0]:,} parameters, more than the limit of {limit:,}")
        if counts[1] > max_tensors:
            raise _TooLarge(f"more than {max_tensors:,} weight tensors, far more than the file holds")

    handles = [register_module_parameter_registration_hook(lambda _m, _n, p: count(p, True)),
               register_module_buffer_registration_hook(lambda _m, _n, b: count(b, False))]
    try:
        yield counts
    finally:
        for handle in handles:
            handle.remove()


def build_on_meta(build: Callable[[], nn.Module], where: str, what: str, limit: int,
                  max_tensors: int) -> tuple[nn.Module, int]:
    """Run `build()` on the meta device (shapes and dtypes, no storage), stopped as soon as it registers
    more than `limit` parameter + buffer elements or `max_tensors` parameters; return the meta module and
    its element count. Refusals are CheckpointErrors naming `where`, `what` is built, the count and the limit.
    Used for checkpoints here and for text encoder folders (whose config.json is just as untrusted)."""
    try:
        with _counting_registrations(limit, max_tensors), torch.device("meta"):
            module = build()
    except _TooLarge as reason:
        raise CheckpointError(
            f"{where}: the {what} config asks for {reason} (refused before allocating anything; "
            f"${MAX_PARAMETERS_ENV} sets the limit)") from None
    except Exception as error:  # noqa: BLE001 - the config is untrusted input; any failure is its fault
        raise CheckpointError(f"{where}: config does not build a {what}: {error}") from None
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    count = sum(t.numel() for t in tensors.values())
    if count > limit:  # a tensor resized after registration; the hooks only saw the first size
        raise CheckpointError(
            f"{where}: the {what} config asks for {count:,} parameters, more than the limit of {limit:,} "
            f"(refused before allocating anything; ${MAX_PARAMETERS_ENV} sets the limit)")
    return module, count


def planned_state(path: str | Path, arch: str, cls: type, config: dict[str, Any], file_tensors: int,
                  limit: int) -> tuple[dict[str, torch.Tensor], int]:
    """`cls(**config)` built on the meta device (`build_on_meta`): its state dict (names, shapes, dtypes)
    and its element count, refused past `limit` or when it registers far more tensors than the file holds."""
    module, count = build_on_meta(lambda: cls(**config), f"{str(path)!r}", arch, limit, 2 * file_tensors + 64)
    return module.state_dict(), count


def _first(names: list[str]) -> str:
    return f"{', '.join(names[:4])}{' ...' if len(names) > 4 else ''}"


def check_tensors(path: str | Path, arch: str, expected: Mapping[str, torch.Tensor],
                  found: Mapping[str, TensorHeader], allow_cast: bool) -> None:
    """The file must hold exactly the config's tensors, with the same shapes; a dtype other than
    float16/bfloat16/float32 (or the model's own dtype for that tensor, e.g. an integer buffer) is refused
    unless `allow_cast`: loading would silently round float64 weights or turn int8 codes into floats."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != found[k].shape)
    if missing or unexpected or wrong:
        details = "; ".join(f"{label}: {_first(names)}" for label, names in
                            (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names)
        raise CheckpointError(f"{str(path)!r}: weights do not match the metadata's {arch} config ({details})")
    if allow_cast:
        return
    odd = sorted(f"{name} ({info.dtype})" for name, info in found.items()
                 if info.dtype not in WEIGHT_DTYPES and _torch_dtype(info.dtype) != expected[name].dtype)
    if odd:
        raise CheckpointError(
            f"{str(path)!r}: tensors of dtypes other than float16/bfloat16/float32 would be cast silently "
            f"({_first(odd)}); convert the file, or load it with allow_cast=True")


def _torch_dtype(name: str) -> torch.dtype | None:
    table = {"F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
             "U8": torch.uint8, "BOOL": torch.bool, **WEIGHT_DTYPES}
    return table.get(name)


def load_model(path: str | Path, device: str = "cpu", kind: str | None = None,
               architectures: Architectures = None, *, allow_cast: bool = False,
               parameter_limit: int | None = None) -> nn.Module:
    """Rebuild the module named by the metadata, load its weights strictly, move to `device`, eval mode.

    Before any real tensor is allocated: the config is checked against the constructor
    (`check_config`), its size is computed on the meta device and refused past `parameter_limit`
    (default: `max_parameters()`, i.e. $NODEGRAPH_MAX_PARAMETERS or 2e9), and the file's tensor
    names, shapes and dtypes must match it (`check_tensors`; `allow_cast=True` accepts e.g. int8 or
    float64 tensors and casts them to the module's dtype). So a tiny file cannot make us build a huge model.
    """
    meta, found = _read_header(path, architectures)
    architecture = _known(architectures)[meta["arch"]]
    cls, arch_kind, arch = architecture.cls, architecture.kind, meta["arch"]
    if kind is not None and arch_kind != kind:
        raise CheckpointError(f"{str(path)!r} holds a {arch_kind} ({arch}), not a {kind}")
    limit = max_parameters() if parameter_limit is None else int(parameter_limit)
    check_config(path, arch, cls, meta["config"])
    expected, _count = planned_state(path, arch, cls, meta["config"], len(found), limit)
    check_tensors(path, arch, expected, found, allow_cast)
    try:
        model = cls(**meta["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{str(path)!r}: config does not build a {arch}: {error}") from error
    model.load_state_dict(load_file(str(path)), strict=True)
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


@node("core/save_backbone", category="models", display_name="Save backbone", outputs=("path",),
      side_effect=True, output_node=True)
def save_backbone(ctx: Context, backbone: BACKBONE, filename: OutputPath = "backbone.safetensors") -> str:
    """Write the backbone as .safetensors with its architecture, config and training facts as JSON metadata
    (atomically; `filename` is relative to the run's output folder, which it may not leave)."""
    return str(save_model(backbone, ctx.output_path(filename), architectures=ctx.components("architecture")))


@node("core/save_classifier", category="models", display_name="Save classifier", outputs=("path",),
      side_effect=True, output_node=True)
def save_classifier(ctx: Context, classifier: CLASSIFIER, filename: OutputPath = "classifier.safetensors") -> str:
    """Write the classifier as .safetensors + JSON metadata (atomically)."""
    return str(save_model(classifier, ctx.output_path(filename), architectures=ctx.components("architecture")))


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
