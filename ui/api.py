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
from starlette.concurrency import run_in_threadpool

from nodegraph import Session, Workflow, WorkflowFormatError

from .runs import RunManager, RunRecord, problems_of

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


def parse_workflow(body: bytes) -> Workflow:
    if len(body) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"workflow is larger than {MAX_UPLOAD_BYTES} bytes")
    try:
        return Workflow.from_json(body)
    except WorkflowFormatError as err:
        raise HTTPException(422, {"message": str(err).splitlines()[0], "problems": err.problems}) from None


async def read_workflow(request: Request) -> Workflow:
    """The posted body as a Workflow: size-limited, parsed as JSON data (off the event loop), shape-checked.

    The server's guard middleware already cuts a body off at the limit while it streams; the checks
    here keep the function safe on its own.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"workflow is larger than {MAX_UPLOAD_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"workflow is larger than {MAX_UPLOAD_BYTES} bytes")
    return await run_in_threadpool(parse_workflow, bytes(body))


def run_key(request: Request) -> str | None:
    """The run's secret, from the `X-Run-Key` header or the `key` query parameter."""
    return request.headers.get("x-run-key") or request.query_params.get("key")


def build_router(session: Session, runs: RunManager, workflows_dir: Path,
                 initial: dict[str, Any] | None = None) -> APIRouter:
    router = APIRouter(prefix="/api")

    def owned(run: int, request: Request) -> RunRecord:
        """The run, if the request carries its key: a client reads and cancels only its own runs."""
        record = runs.runs.get(run)
        if record is None:
            raise HTTPException(404, f"no run {run}")
        if not record.opens_with(run_key(request)):
            raise HTTPException(403, f"run {run} belongs to another client (send its key as X-Run-Key)")
        return record

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

        def check() -> dict[str, Any]:  # a big graph takes a while: keep the event loop free
            problems = problems_of(workflow, session)
            return {"ok": not problems, "problems": [p.as_dict() for p in problems],
                    "workflow": json.loads(workflow.to_json())}

        return await run_in_threadpool(check)

    @router.post("/run")
    async def run(request: Request) -> JSONResponse:
        """Start a run; the answer carries its id and its key (needed to follow, read or cancel it)."""
        workflow = await read_workflow(request)
        problems = await run_in_threadpool(problems_of, workflow, session)
        if problems:
            return JSONResponse({"ok": False, "problems": [p.as_dict() for p in problems]})
        try:
            record = runs.start(workflow)
        except RuntimeError as err:
            return JSONResponse({"ok": False, "error": str(err)}, status_code=409)
        return JSONResponse({"ok": True, "run": record.id, "key": record.key})

    @router.get("/runs/{run}")
    def run_summary(run: int, request: Request) -> dict[str, Any]:
        return owned(run, request).summary()

    @router.get("/runs/{run}/events")
    def events(run: int, request: Request, since: int = 0) -> dict[str, Any]:
        record = owned(run, request)
        since = max(0, since)
        chunk = record.events[since:]
        return {"events": chunk, "next": since + len(chunk), "status": record.status}

    @router.post("/runs/{run}/cancel")
    def cancel(run: int, request: Request) -> dict[str, Any]:
        return {"cancelled": runs.cancel(owned(run, request))}

    @router.get("/runs/{run}/outputs/{node}.png")
    def output_png(run: int, node: str, request: Request, index: int = 0) -> Response:
        images = owned(run, request).images.get(node, [])
        if not 0 <= index < len(images):
            raise HTTPException(404, f"no image {index} of node {node!r} in run {run}")
        return Response(images[index], media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get("/runs/{run}/preview.png")
    def preview_png(run: int, request: Request) -> Response:
        record = owned(run, request)
        if record.preview is None:
            raise HTTPException(404, f"no preview for run {run}")
        return Response(record.preview, media_type="image/png", headers={"Cache-Control": "no-store"})

    return router
