"""Offline, safetensors-only, size-checked loading of diffusers / transformers components from folders.

Nothing here can reach a model hub: a value that is not an existing folder is an error saying what to
point at (a hub id gets a hint), the hub libraries run with HF_HUB_OFFLINE set and `local_files_only`,
weights load only from `.safetensors` (a folder holding only pickles is refused, never unpickled) and no
remote code runs. Before anything is allocated, the component is built on the meta device from its
config and its parameter count compared with the elements its weight files hold: a config asking for
more than is on disk (a 1 KB file claiming billions of parameters) is refused (1/8 slack for tied weights
and unsaved buffers), and so is anything over
$NODEGRAPH_MAX_PARAMETERS when that is set.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models.checkpoint import MAX_PARAMETERS_ENV, CheckpointError, TensorHeader, build_on_meta, max_parameters

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_HEADER_BYTES = 100 << 20
"""A safetensors header past this is corrupt (real ones are a few hundred KB)."""


class ModelFolderError(FileNotFoundError):
    """A model path that is missing, not a folder of the expected layout, or not loadable offline."""


def offline() -> None:
    """Make the hub libraries refuse any network access for the rest of the process (and keep their
    per-file progress bars off stderr: the run's own events report progress)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def local_folder(value: str, what: str) -> Path:
    """`value` as an existing folder; otherwise a clear error (a hub id is named as such)."""
    path = Path(value).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelFolderError(f"{what}: {value!r} is a file; point at the model's folder")
    hint = ""
    if HUB_ID.match(value) and not value.startswith((".", "~")):
        hint = (" It looks like a Hugging Face hub id: nodegraph never downloads models. Download it yourself "
                "(for example `huggingface-cli download " + value + " --local-dir models/" + value.split("/")[-1]
                + "`) and set the path to that folder.")
    raise ModelFolderError(f"{what}: no folder {value!r}.{hint}")


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{what}: {str(path)!r} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{what}: {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what}: {str(path)!r} must hold a JSON object")
    return data


DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}
"""Bytes per element of the safetensors dtypes a model file may hold."""


def safetensors_header(file: Path) -> dict[str, TensorHeader]:
    """Every tensor's shape and dtype, from the header alone, checked against the file: each tensor's byte
    range must be exactly shape x dtype bytes, and the ranges must tile the data that follows the header.
    So a header that claims huge shapes in a small file is refused before anything is read or allocated."""
    where = str(file)
    try:
        with file.open("rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise CheckpointError(f"{where!r}: not a safetensors file (header length {length})")
            header = json.loads(handle.read(length))
        data_bytes = file.stat().st_size - 8 - length
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{where!r}: corrupt safetensors header: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{where!r}: corrupt safetensors header")
    tensors, ranges = {}, []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        entry = entry if isinstance(entry, dict) else {}
        shape, dtype, offsets = entry.get("shape"), entry.get("dtype"), entry.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or dtype not in DTYPE_BYTES or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{where!r}: corrupt safetensors header (tensor {name!r})")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype] or not 0 <= offsets[0] <= offsets[1]:
            raise CheckpointError(f"{where!r}: corrupt safetensors header: tensor {name!r} of shape {shape} {dtype} "
                                  f"does not fit its byte range {offsets}")
        tensors[name] = TensorHeader(tuple(shape), dtype)
        ranges.append(offsets)
    end = 0
    for start, stop in sorted(ranges):
        end = stop if start == end else -1
    if end != data_bytes:
        raise CheckpointError(f"{where!r}: corrupt safetensors file: the header describes tensors that do not "
                              f"tile its {data_bytes:,} bytes of data (truncated, or shapes larger than the file)")
    return tensors


def safetensors_elements(file: Path) -> int:
    """Elements of every tensor a .safetensors file declares, from its (checked) header alone."""
    return sum(math.prod(t.shape) for t in safetensors_header(file).values())


def weight_files(folder: Path, what: str) -> list[Path]:
    """The .safetensors files of a component folder; a folder with only pickled weights is refused."""
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{what}: {str(folder)!r} holds only pickled weights ({', '.join(pickles)}); "
                              "nodegraph loads safetensors only (never unpickles). Convert them to .safetensors.")
    raise ModelFolderError(f"{what}: no .safetensors weights in {str(folder)!r}")


def check_size(folder: Path, what: str, build: Callable[[], nn.Module]) -> int:
    """Build the component on the meta device and refuse it when it has more parameters than its weight
    files hold (or than $NODEGRAPH_MAX_PARAMETERS, when set); the parameter count otherwise."""
    on_disk = sum(safetensors_elements(f) for f in weight_files(folder, what))
    # slack for tied weights (counted once on disk, registered twice while building) and for buffers that
    # checkpoints leave out (position ids): a config must stay the same size as its weights, not grow 1000x
    limit = on_disk + on_disk // 8 + (1 << 20)
    if os.environ.get(MAX_PARAMETERS_ENV, "").strip():
        limit = min(limit, max_parameters())
    _module, count = build_on_meta(build, f"{str(folder)!r}", what, limit, 100_000)
    return count


def load_component(folder: Path, cls: Any, what: str, dtype: torch.dtype, device: str,
                   config_loader: Callable[[Path], Any], builder: Callable[[Any], nn.Module]) -> nn.Module:
    """Size-check, then load `cls` from `folder` offline from safetensors, frozen, on `device` in `dtype`."""
    offline()
    if not folder.is_dir():
        raise ModelFolderError(f"{what}: the folder {str(folder)!r} is missing")
    try:
        config = config_loader(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{what}: {str(folder)!r} has no usable config: {error}") from None
    check_size(folder, what, lambda: builder(config))
    model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, torch_dtype=dtype)
    return model.requires_grad_(False).eval().to(device)


def diffusers_component(folder: Path, class_name: str, what: str, dtype: torch.dtype, device: str) -> nn.Module:
    """A diffusers model (UNet2DConditionModel, SD3Transformer2DModel, FluxTransformer2DModel, AutoencoderKL)."""
    import diffusers

    cls = getattr(diffusers, class_name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.ModelMixin):
        raise CheckpointError(f"{what}: {class_name!r} is not a diffusers model class")
    return load_component(folder, cls, what, dtype, device, lambda f: cls.load_config(str(f), local_files_only=True),
                          cls.from_config)


def transformers_component(folder: Path, class_name: str, what: str, dtype: torch.dtype, device: str) -> nn.Module:
    """A transformers text model (CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel)."""
    import transformers

    if class_name not in ("CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel"):
        raise CheckpointError(f"{what}: text encoder class {class_name!r} is not supported")
    cls = getattr(transformers, class_name)
    return load_component(folder, cls, what, dtype, device,
                          lambda f: cls.config_class.from_pretrained(str(f), local_files_only=True),
                          lambda config: cls(config))


def tokenizer(folder: Path, class_name: str, what: str) -> Any:
    """A tokenizer from its own files (never the hub): CLIP BPE or T5."""
    import transformers

    offline()
    if class_name not in ("CLIPTokenizer", "CLIPTokenizerFast", "T5Tokenizer", "T5TokenizerFast", "AutoTokenizer"):
        raise CheckpointError(f"{what}: tokenizer class {class_name!r} is not supported")
    if not folder.is_dir():
        raise ModelFolderError(f"{what}: the folder {str(folder)!r} is missing")
    try:
        return getattr(transformers, class_name).from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as error:
        raise ModelFolderError(f"{what}: cannot read the tokenizer in {str(folder)!r}: {error}") from None
