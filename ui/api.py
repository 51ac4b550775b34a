"""JSON endpoints the browser editor talks to (mounted on the same server as the Gradio page).

Uploaded or posted workflows are data only: they are parsed and validated against the registry
and never executed as code. Opening a saved workflow reads only `*.json` files under the
workflows folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from nodegraph import Session, Workflow, WorkflowFormatError

from .runs import RunManager, problems_of

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
"""Largest workflow the browser may post; real workflows are a few kilobytes."""

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*\.json$")


def registry_payload(session: Session) -> dict[str, Any]:
    """Node schemas by id, and socket types with colour and lineage (the browser checks links with it)."""
    registry = session.registry
    types = {name: {"color": t.color, "lineage": t.lineage(), "description": t.description, "widget": t.widget}
             for name, t in registry.types.items()}
    nodes = {node_id: node_type.schema(registry) for node_id, node_type in sorted(registry.nodes.items())}
    return {"types": types, "nodes": nodes}


def list_workflows(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.json")
                  if _NAME.match(p.relative_to(folder).as_posix()))


def resolve_workflow_file(folder: Path, name: str) -> Path:
    """`name` as a file under `folder`; anything else (absolute, `..`, links out, not .json) is refused."""
    if not _NAME.match(name):
        raise HTTPException(400, f"not a workflow name: {name!r}")
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise HTTPException(404, f"no workflow {name!r} in the workflows folder")
    return path


async def read_workflow(request: Request) -> Workflow:
    """The posted body as a Workflow: size-limited, parsed as JSON data, shape-checked."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"workflow is larger than {MAX_UPLOAD_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"workflow is larger than {MAX_UPLOAD_BYTES} bytes")
    try:
        return Workflow.from_json(body)
    except WorkflowFormatError as err:
        raise HTTPException(422, {"message": str(err).splitlines()[0], "problems": err.problems}) from None


def build_router(session: Session, runs: RunManager, workflows_dir: Path,
                 initial: dict[str, Any] | None = None) -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/nodes")
    def nodes() -> dict[str, Any]:
        return registry_payload(session)

    @router.get("/workflows")
    def workflows() -> dict[str, Any]:
        return {"workflows": list_workflows(workflows_dir), "initial": initial}

    @router.get("/workflows/{name:path}")
    def open_workflow(name: str) -> dict[str, Any]:
        path = resolve_workflow_file(workflows_dir, name)
        try:
            workflow = Workflow.load(path)
        except WorkflowFormatError as err:
            raise HTTPException(422, {"message": str(err).splitlines()[0], "problems": err.problems}) from None
        return {"name": name, "workflow": workflow.to_dict()}

    @router.post("/validate")
    async def validate(request: Request) -> dict[str, Any]:
        workflow = await read_workflow(request)
        problems = problems_of(workflow, session)
        return {"ok": not problems, "problems": [p.as_dict() for p in problems],
                "workflow": json.loads(workflow.to_json())}

    @router.post("/run")
    async def run(request: Request) -> JSONResponse:
        workflow = await read_workflow(request)
        problems = problems_of(workflow, session)
        if problems:
            return JSONResponse({"ok": False, "problems": [p.as_dict() for p in problems]})
        try:
            record = runs.start(workflow)
        except RuntimeError as err:
            return JSONResponse({"ok": False, "error": str(err)}, status_code=409)
        return JSONResponse({"ok": True, "run": record.id})

    @router.get("/events")
    def events(run: int, since: int = 0) -> dict[str, Any]:
        record = runs.runs.get(run)
        if record is None:
            raise HTTPException(404, f"no run {run}")
        since = max(0, since)
        chunk = record.events[since:]
        return {"events": chunk, "next": since + len(chunk), "status": record.status}

    @router.get("/runs/{run}")
    def run_summary(run: int) -> dict[str, Any]:
        record = runs.runs.get(run)
        if record is None:
            raise HTTPException(404, f"no run {run}")
        return record.summary()

    @router.post("/cancel")
    def cancel() -> dict[str, Any]:
        return {"cancelled": runs.cancel()}

    @router.get("/outputs/{run}/{node}.png")
    def output_png(run: int, node: str, index: int = 0) -> Response:
        record = runs.runs.get(run)
        images = record.images.get(node, []) if record is not None else []
        if not 0 <= index < len(images):
            raise HTTPException(404, f"no image {index} of node {node!r} in run {run}")
        return Response(images[index], media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get("/preview/{run}.png")
    def preview_png(run: int) -> Response:
        record = runs.runs.get(run)
        if record is None or record.preview is None:
            raise HTTPException(404, f"no preview for run {run}")
        return Response(record.preview, media_type="image/png", headers={"Cache-Control": "no-store"})

    return router
