"""What the editor's server keeps of a job: besides the summaries, PNGs of IMAGE outputs and previews.

Jobs run in the queue (nodegraph.jobs); this recorder tells it which nodes to compute (the output
nodes, plus the IMAGE sources of side-effect outputs, so saved images show too) and renders IMAGE
values as PNG files in the job's own folder of the data folder, where the page loads them from.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from nodegraph import Session, Workflow, WorkflowInvalid, atomic_write_bytes
from nodegraph.jobs import OutputFile, OutputRecorder
from nodegraph.validate import Plan, Problem


def png_bytes(images: Any) -> list[bytes]:
    """A (B, C, H, W) tensor in [0, 1] (or (C, H, W)) to one PNG per image."""
    from nodes.image_io import tensor_to_pil

    pngs = []
    for image in tensor_to_pil(images):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def is_image_output(socket_lineage: list[str], value: Any) -> bool:
    return "IMAGE" in socket_lineage and type(value).__name__ == "Tensor" and value.dim() in (3, 4)


def display_targets(plan: Plan) -> list[str]:
    """The plan's output nodes, plus the IMAGE sources of side-effect outputs (so saved images show too)."""
    targets = plan.output_nodes()
    extra: list[str] = []
    for node_id in targets:
        pn = plan.nodes[node_id]
        if not pn.type.side_effect:
            continue
        for source, output in pn.links.values():
            socket = plan.nodes[source].type.outputs[output].socket
            if "IMAGE" in socket.lineage() and source not in targets and source not in extra:
                extra.append(source)
    return targets + extra


def problems_of(workflow: Workflow, session: Session) -> list[Problem]:
    """Every problem of `workflow`, its paths checked against the session's own roots."""
    try:
        session.compile(workflow)
    except WorkflowInvalid as err:
        return err.problems
    return []


class ImageRecorder(OutputRecorder):
    """Output recording for the editor: IMAGE outputs become PNG files, progress previews PNG bytes."""

    def targets(self, plan: Plan) -> list[str]:
        return display_targets(plan)

    def record(self, session: Session, plan: Plan, outputs: dict[str, dict[str, Any]],
               folder: Path) -> tuple[dict[str, dict[str, Any]], list[OutputFile]]:
        summaries, files = super().record(session, plan, outputs, folder)
        count = 0
        for node_id, values in outputs.items():
            node_type = plan.nodes[node_id].type
            index = sum(1 for f in files if f.node == node_id)
            for name, value in values.items():
                for item in _elements(value):  # a node run once per list element: every element's images
                    if not is_image_output(node_type.outputs[name].socket.lineage(), item):
                        continue
                    for png in png_bytes(item):
                        path = atomic_write_bytes(folder / f"{count:04d}.png", png)  # node ids are no file names
                        files.append(OutputFile(node_id, index, "preview", str(path), "image/png"))
                        index, count = index + 1, count + 1
        return summaries, files

    def preview(self, value: Any) -> bytes | None:
        try:
            return png_bytes(value[:1] if value.dim() == 4 else value)[0]
        except (ValueError, AttributeError, TypeError):
            return None


def _elements(value: Any) -> list[Any]:
    """The value, or the leaves of a (nested) list of values."""
    if isinstance(value, list):
        return [leaf for item in value for leaf in _elements(item)]
    return [value]
