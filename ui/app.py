"""The Gradio app: the node editor page, its JSON endpoints, and the `run_workflow` API endpoint.

One `Session` per app, so its cache persists across runs: re-running with a changed seed re-runs
only the nodes that depend on it. The editor itself is plain JavaScript served from `ui/static`;
Gradio hosts the page and the headless endpoint that `gradio_client` calls.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nodegraph import NodeFailed, RunCancelled, Session, Workflow, WorkflowFormatError, atomic_write_bytes

from .api import MAX_UPLOAD_BYTES, build_router
from .runs import RunManager, collect_outputs, display_targets, problems_of

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"
SCRIPTS = ("graph.js", "widgets.js", "canvas.js", "runner.js", "editor.js")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class AppContext:
    session: Session
    runs: RunManager
    workflows_dir: Path
    initial: dict[str, Any] | None = None


def page_head(prefix: str = "/ui-static") -> str:
    """Tags that load the editor into the Gradio page (no build step: plain files)."""
    tags = [f'<link rel="stylesheet" href="{prefix}/editor.css">']
    tags += [f'<script src="{prefix}/{name}" defer></script>' for name in SCRIPTS]
    return "\n".join(tags)


def run_workflow_json(session: Session, workflow_json: str, folder: Path) -> tuple[dict[str, Any], list[str]]:
    """Validate and run a workflow given as JSON text; returns (summary, PNG files of IMAGE outputs).

    The PNGs go to `folder`, emptied first: Gradio copies returned files into its own cache, and
    the endpoint runs one call at a time, so only the latest call's files are kept here.
    """
    if len(workflow_json.encode("utf-8")) > MAX_UPLOAD_BYTES:
        return {"ok": False, "error": f"workflow is larger than {MAX_UPLOAD_BYTES} bytes"}, []
    try:
        workflow = Workflow.from_json(workflow_json)
    except WorkflowFormatError as err:
        return {"ok": False, "error": str(err), "problems": [{"message": p} for p in err.problems]}, []
    problems = problems_of(workflow, session)
    if problems:
        return {"ok": False, "error": "workflow is invalid", "problems": [p.as_dict() for p in problems]}, []
    try:
        plan = session.compile(workflow)
        result = session.run(plan, outputs=display_targets(plan))
    except (NodeFailed, RunCancelled) as err:
        return {"ok": False, "error": str(err)}, []
    summaries, images = collect_outputs(session, workflow, result.outputs)
    for stale in folder.glob("*.png"):
        stale.unlink()
    files: list[str] = []
    image_files: dict[str, list[str]] = {}
    for node_id, pngs in images.items():
        for index, png in enumerate(pngs):
            path = folder / f"{node_id}_{index:03d}.png"
            atomic_write_bytes(path, png)
            files.append(str(path))
            image_files.setdefault(node_id, []).append(path.name)
    summary = {"ok": True, "ran": result.ran, "cached": result.cached, "seconds": round(result.seconds, 4),
               "outputs": summaries, "images": image_files}
    return summary, files


def build_app(session: Session | None = None, workflows_dir: str | Path | None = None,
              initial: dict[str, Any] | None = None) -> gr.Blocks:
    """The Gradio Blocks: editor container + the `run_workflow` endpoint. Serve it with `create_server`."""
    session = session if session is not None else Session()
    context = AppContext(session, RunManager(session), Path(workflows_dir or DEFAULT_WORKFLOWS_DIR), initial)
    with gr.Blocks(title="nodegraph", fill_width=True) as blocks:
        gr.HTML('<div id="ng-root" class="ng-root">loading the editor...</div>', js_on_load=None,
                elem_id="ng-host", padding=False)
        with gr.Row(visible=False):
            workflow_in = gr.Textbox(label="workflow JSON")
            summary_out = gr.JSON(label="summary")
            files_out = gr.File(label="images", file_count="multiple")
            trigger = gr.Button("run")
        api_dir = Path(tempfile.mkdtemp(prefix="nodegraph-api-"))
        trigger.click(lambda text: run_workflow_json(context.session, text, api_dir), inputs=workflow_in,
                      outputs=[summary_out, files_out], api_name="run_workflow", concurrency_limit=1)
    blocks.nodegraph_context = context  # type: ignore[attr-defined]
    return blocks


def create_server(blocks: gr.Blocks) -> FastAPI:
    """A FastAPI app with the editor's JSON routes and static files, and the Gradio page at '/'."""
    context: AppContext = blocks.nodegraph_context  # type: ignore[attr-defined]
    app = FastAPI(title="nodegraph")
    app.include_router(build_router(context.session, context.runs, context.workflows_dir, context.initial))
    app.mount("/ui-static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    return gr.mount_gradio_app(app, blocks, path="/", head=page_head(), footer_links=["api"],
                               max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False)


def main(workflow_path: str | None, host: str = "127.0.0.1", port: int = 7860,
         plugin_dirs: list[str] | None = None) -> None:
    """Start the editor and block until interrupted (`nodegraph ui`)."""
    import uvicorn

    from nodegraph.plugins import load_registry

    registry, report = load_registry(plugin_dirs or [])
    for failure in report.failures:
        print(f"warning: plugin {failure.name} failed to load: {failure.error}", file=sys.stderr)
    initial = None
    if workflow_path:
        workflow = Workflow.load(workflow_path)
        initial = {"name": Path(workflow_path).name, "workflow": json.loads(workflow.to_json())}
    if host not in LOCAL_HOSTS:
        print(f"warning: binding {host}: anyone who can reach this address can run workflows here",
              file=sys.stderr)
    root = Path.cwd()
    blocks = build_app(Session(registry, output_dir="outputs", input_roots=[root]), initial=initial)
    print(f"nodegraph editor on http://{'[' + host + ']' if ':' in host else host}:{port}/", file=sys.stderr)
    uvicorn.run(create_server(blocks), host=host, port=port, log_level="warning")
