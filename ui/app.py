"""The Gradio app: the node editor page, its JSON endpoints, and the `run_workflow` API endpoint.

One `Session` per app, so its cache persists across runs: re-running with a changed seed re-runs
only the nodes that depend on it. The editor itself is plain JavaScript served from `ui/static`;
Gradio hosts the page and the headless endpoint that `gradio_client` calls.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from nodegraph import NodeFailed, RunCancelled, Session, Workflow, WorkflowFormatError, atomic_write_bytes
from nodegraph.settings import check_settings

from .api import MAX_UPLOAD_BYTES, build_router
from .guard import GuardConfig, install_guard, new_token
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


def create_server(blocks: gr.Blocks, guard: GuardConfig | None = None) -> FastAPI:
    """A FastAPI app with the editor's JSON routes and static files, and the Gradio page at '/'.

    Every route (Gradio's included) sits behind the `ui.guard.Guard` middleware: loopback Host
    names and same-origin requests only, a token when `guard.token` is set, bounded bodies.
    """
    context: AppContext = blocks.nodegraph_context  # type: ignore[attr-defined]
    app = FastAPI(title="nodegraph")
    app.include_router(build_router(context.session, context.runs, context.workflows_dir, context.initial))
    app.mount("/ui-static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app = gr.mount_gradio_app(app, blocks, path="/", head=page_head(), footer_links=["api"],
                              max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False)
    install_guard(app, guard if guard is not None else GuardConfig(api_body_limit=MAX_UPLOAD_BYTES))
    return app


def split_names(*values: str | None) -> frozenset[str]:
    """Comma-separated lists (flags, environment variables) to one set of names."""
    return frozenset(name.strip() for value in values if value for name in value.split(",") if name.strip())


def server_config(host: str, token: str | None = None, allowed_hosts: list[str] | None = None,
                  allowed_origins: list[str] | None = None,
                  environ: dict[str, str] | None = None) -> tuple[GuardConfig, bool]:
    """The guard for `nodegraph ui`: a token from the flag or NODEGRAPH_TOKEN, generated when the
    bind address is not loopback and none was given; extra Host names from --allowed-host or
    NODEGRAPH_ALLOWED_HOSTS (a specific bind address counts as one). Returns (config, generated)."""
    env = os.environ if environ is None else environ
    token = token or env.get("NODEGRAPH_TOKEN") or None
    loopback = host in LOCAL_HOSTS
    generated = False
    if token is None and not loopback:
        token, generated = new_token(), True
    hosts = set(split_names(*(allowed_hosts or []), env.get("NODEGRAPH_ALLOWED_HOSTS")))
    if not loopback and host not in ("0.0.0.0", "::", ""):
        hosts.add(host)
    origins = split_names(*(allowed_origins or []), env.get("NODEGRAPH_ALLOWED_ORIGINS"))
    return GuardConfig(token=token, allowed_hosts=frozenset(hosts), allowed_origins=origins,
                       api_body_limit=MAX_UPLOAD_BYTES), generated


def start_url(host: str, port: int, config: GuardConfig) -> str:
    """The URL to open: a loopback or configured name (not 0.0.0.0), with ?token= when one is needed."""
    name = host
    if host in ("0.0.0.0", "::", ""):
        extra = sorted(config.hosts - {"127.0.0.1", "localhost", "::1"})
        name = extra[0] if extra else "127.0.0.1"
    shown = f"[{name}]" if ":" in name else name
    return f"http://{shown}:{port}/" + (f"?token={config.token}" if config.token else "")


def main(workflow_path: str | None, host: str = "127.0.0.1", port: int = 7860,
         plugin_dirs: list[str] | None = None, token: str | None = None,
         allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None,
         read_roots: list[str] | None = None, disabled_plugins: list[str] | None = None,
         only_plugins: list[str] | None = None) -> None:
    """Start the editor and block until interrupted (`nodegraph ui`, `python -m ui`).

    Nodes may read the working folder, `read_roots` and $NODEGRAPH_READ_ROOTS; they write to ./outputs.
    `disabled_plugins` / `only_plugins` select plugins as `nodegraph run` does (built-ins always load)."""
    import uvicorn

    from nodegraph.plugins import load_registry

    registry, report = load_registry(plugin_dirs or [], disabled=disabled_plugins or (), only=only_plugins)
    check_settings(registry)  # a bad NODEGRAPH_* value stops the start, not a run much later
    for failure in report.failures:
        print(f"warning: plugin {failure.name} failed to load: {failure.error}", file=sys.stderr)
    initial = None
    if workflow_path:
        workflow = Workflow.load(workflow_path)
        initial = {"name": Path(workflow_path).name, "workflow": json.loads(workflow.to_json())}
    config, generated = server_config(host, token, allowed_hosts, allowed_origins)
    if host not in LOCAL_HOSTS:
        print(f"warning: binding {host}: anyone who can reach this address and has the token can run "
              "workflows here", file=sys.stderr)
        if generated:
            print("a token was generated for this start (set NODEGRAPH_TOKEN or --token to choose one)",
                  file=sys.stderr)
        if host in ("0.0.0.0", "::") and config.hosts == {"127.0.0.1", "localhost", "::1"}:
            print("note: only loopback Host names are accepted; pass --allowed-host NAME (or "
                  "NODEGRAPH_ALLOWED_HOSTS) for the name other machines use", file=sys.stderr)
    session = Session(registry, output_dir="outputs", read_roots=[Path.cwd(), *(read_roots or [])])
    blocks = build_app(session, initial=initial)
    print(f"nodegraph editor on {start_url(host, port, config)}", file=sys.stderr, flush=True)
    uvicorn.run(create_server(blocks, config), host=host, port=port, log_level="warning")
