"""JSON endpoints the browser editor talks to: node schemas, the workflows folder, validation.

Runs are jobs (ui/jobs_api.py). `nodegraph serve` serves these routes too, without the page.

Uploaded or posted workflows are data only: they are parsed and validated against the registry
and never executed as code. Opening a saved workflow reads only `*.json` files under the
workflows folder. Uploaded images and painted masks go to the inputs folder only (see ui.inputs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from nodegraph import Session, Workflow, WorkflowFormatError

from .inputs import MAX_INPUT_BYTES, InputRefused, read_image_png, store_input, workflow_path
from .runs import problems_of

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


async def read_body(request: Request, limit: int, what: str = "the body") -> bytes:
    """The request body, refused (413) as soon as it passes `limit` bytes.

    The server's guard middleware already cuts a body off at the limit while it streams; the checks
    here keep the function safe on its own.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"{what} is larger than {limit} bytes")
    return bytes(body)


async def read_workflow(request: Request) -> Workflow:
    """The posted body as a Workflow: size-limited, parsed as JSON data (off the event loop), shape-checked."""
    body = await read_body(request, MAX_UPLOAD_BYTES, "workflow")
    return await run_in_threadpool(parse_workflow, body)


def build_router(session: Session, workflows_dir: Path, initial: dict[str, Any] | None = None,
                 inputs_dir: Path | None = None) -> APIRouter:
    """The editor's routes: node schemas, the workflows folder, validation, uploaded images and painted
    masks (runs are jobs: ui.jobs_api)."""
    router = APIRouter(prefix="/api", tags=["editor"])
    inputs = Path(inputs_dir) if inputs_dir is not None else Path.cwd() / "inputs"

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

    @router.post("/inputs")
    async def upload_input(request: Request, kind: str = "image", name: str = "") -> dict[str, Any]:
        """Store a posted image (or painted mask, kind=mask) in the inputs folder; answers the path a
        workflow names it by."""
        if kind not in ("image", "mask"):
            raise HTTPException(400, f"kind must be image or mask, not {kind!r}")
        body = await read_body(request, MAX_INPUT_BYTES, "the image")

        def store() -> dict[str, Any]:
            try:
                stored = store_input(inputs, body, kind, name)  # type: ignore[arg-type]
            except InputRefused as err:
                raise HTTPException(422, str(err)) from None
            path = workflow_path(stored)
            try:
                session.paths.check_read(path)
            except ValueError as err:
                raise HTTPException(409, f"the inputs folder {str(inputs)!r} is not readable by workflows "
                                         f"here: {err}") from None
            return {"path": path}

        return await run_in_threadpool(store)

    @router.get("/image")
    async def show_image(path: str) -> Response:
        """An image a workflow could read (confined like a run's reads), re-encoded as PNG."""
        try:
            png = await run_in_threadpool(read_image_png, session.paths, path)
        except InputRefused as err:
            raise HTTPException(404, str(err)) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.post("/validate")
    async def validate(request: Request) -> dict[str, Any]:
        workflow = await read_workflow(request)

        def check() -> dict[str, Any]:  # a big graph takes a while: keep the event loop free
            problems = problems_of(workflow, session)
            return {"ok": not problems, "problems": [p.as_dict() for p in problems],
                    "workflow": json.loads(workflow.to_json())}

        return await run_in_threadpool(check)

    return router
