"""What a job keeps of its outputs: JSON summaries of the values, and the files it produced.

The engine knows no socket types of the node library, so `OutputRecorder` keeps what any workflow
has: a short JSON description of every output value (tensors by shape, dtype and range) and the
files that side-effect nodes wrote into the output folder (an output that is the path, or a list
of paths, of a file there). The editor's recorder (ui/runs.py) adds PNG renderings of IMAGE outputs
and of progress previews.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..session import Session
from ..validate import Plan
from .store import OutputFile

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".json": "application/json", ".txt": "text/plain", ".safetensors": "application/octet-stream"}


def summarize(value: Any) -> Any:
    """A short JSON description of an output value (tensors by shape and range)."""
    if type(value).__name__ in ("Tensor", "Parameter"):
        info: dict[str, Any] = {"kind": "tensor", "shape": list(value.shape),
                                "dtype": str(value.dtype).removeprefix("torch.")}
        if value.numel() and value.is_floating_point():
            info["min"], info["max"] = float(value.min()), float(value.max())
        return info
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        return [summarize(v) for v in value]
    text = repr(value)
    return {"kind": type(value).__name__, "repr": text if len(text) <= 200 else text[:197] + "..."}


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def inside(path: Path, folder: Path) -> bool:
    """True when `path` (resolved, links followed) is a regular file under `folder` (resolved)."""
    try:
        resolved = path.resolve()
        return resolved.is_relative_to(folder.resolve()) and resolved.is_file()
    except (OSError, RuntimeError):
        return False


def saved_paths(value: Any) -> list[str]:
    """The strings of an output that may name files: a str, or a list/tuple of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return []


class OutputRecorder:
    """Decides which nodes a job computes and what it keeps of their values.

    Subclasses (the editor's) render images: `record` may write files into `folder`, a folder of its
    own for this job inside the data folder, and `preview` turns a progress preview into PNG bytes."""

    def targets(self, plan: Plan) -> list[str]:
        """The nodes a job asks for: the workflow's output nodes."""
        return plan.output_nodes()

    def record(self, session: Session, plan: Plan, outputs: dict[str, dict[str, Any]],
               folder: Path) -> tuple[dict[str, dict[str, Any]], list[OutputFile]]:
        """Summaries of every output by node, and the files side-effect nodes saved in the output folder."""
        summaries = {node_id: {name: summarize(v) for name, v in values.items()} for node_id, values in outputs.items()}
        files: list[OutputFile] = []
        for node_id, values in outputs.items():
            if not plan.nodes[node_id].type.side_effect:
                continue
            index = 0
            for value in values.values():
                for text in saved_paths(value):
                    path = Path(text)
                    if inside(path, session.output_dir):
                        files.append(OutputFile(node_id, index, "saved", str(path.resolve()), media_type(path)))
                        index += 1
        return summaries, files

    def preview(self, value: Any) -> bytes | None:
        """PNG bytes of a progress report's `preview` value; None: not kept."""
        return None
