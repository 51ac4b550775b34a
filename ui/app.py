"""The server: the jobs API, the editor's JSON endpoints, and (`nodegraph ui`) the Gradio page.

One `Session` and one job queue per server, so the cache persists across runs: re-running with a
changed seed re-runs only the nodes that depend on it, and loaded models stay loaded between jobs.
The editor itself is plain JavaScript served from `ui/static`; Gradio hosts the page and the
headless `run_workflow` endpoint that `gradio_client` calls (it queues a job and waits for it).
`nodegraph serve` is the same server without the page and the Gradio endpoint.
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

from nodegraph import Session, Workflow, WorkflowFormatError, atomic_write_bytes
from nodegraph.disk_cache import DEFAULT_LIMIT_BYTES
from nodegraph.jobs import JobQueue, JobRejected, JobStore
from nodegraph.settings import check_settings

from .api import MAX_UPLOAD_BYTES, build_router
from .guard import GuardConfig, install_guard, new_token
from .jobs_api import build_jobs_router
from .runs import ImageRecorder

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"
SCRIPTS = ("graph.js", "widgets.js", "maskpaint.js", "canvas.js", "runner.js", "editor.js")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_DATA_DIR = ".nodegraph"
"""The data folder (jobs database, job preview images) when neither --data-dir nor $NODEGRAPH_DATA_DIR
names one: `.nodegraph` in the working folder."""


@dataclass
class AppContext:
    session: Session
    jobs: JobQueue
    workflows_dir: Path
    initial: dict[str, Any] | None = None
    inputs_dir: Path | None = None
    """Where images and masks uploaded or painted in the editor go (None: ./inputs); it must lie inside
    the session's read roots so that workflows can read them."""

    def close(self, timeout: float = 60.0) -> None:
        """Stop the queue (a running job becomes interrupted), close the store and the Ray workers."""
        self.jobs.stop(timeout)
        self.jobs.store.close()
        if self.jobs.executor is not None:
            self.jobs.executor.close()


def make_context(session: Session | None = None, workflows_dir: str | Path | None = None,
                 initial: dict[str, Any] | None = None, data_dir: str | Path | None = None,
                 inputs_dir: str | Path | None = None, *, executor: Any = None, workers: int = 1) -> AppContext:
    """The server's state, its job queue started: jobs in `data_dir` (a new temporary folder when None,
    for tests and notebooks; the CLI passes the real one). `executor` (a `RayExecutor`) runs jobs on its
    workers, `workers` at a time."""
    session = session if session is not None else Session()
    folder = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="nodegraph-data-"))
    jobs = JobQueue(session, JobStore(folder), ImageRecorder(), executor=executor, workers=workers).start()
    return AppContext(session, jobs, Path(workflows_dir or DEFAULT_WORKFLOWS_DIR), initial,
                      Path(inputs_dir) if inputs_dir is not None else None)


def page_head(prefix: str = "/ui-static") -> str:
    """Tags that load the editor into the Gradio page (no build step: plain files)."""
    tags = [f'<link rel="stylesheet" href="{prefix}/editor.css">']
    tags += [f'<script src="{prefix}/{name}" defer></script>' for name in SCRIPTS]
    return "\n".join(tags)


def run_workflow_json(jobs: JobQueue, workflow_json: str, folder: Path) -> tuple[dict[str, Any], list[str]]:
    """Queue a workflow given as JSON text and wait for it; returns (summary, PNG files of IMAGE outputs).

    The PNGs go to `folder`, emptied first: Gradio copies returned files into its own cache, and
    the endpoint runs one call at a time, so only the latest call's files are kept here.
    """
    if len(workflow_json.encode("utf-8")) > MAX_UPLOAD_BYTES:
        return {"ok": False, "error": f"workflow is larger than {MAX_UPLOAD_BYTES} bytes"}, []
    try:
        job, _ = jobs.submit(Workflow.from_json(workflow_json))
    except WorkflowFormatError as err:
        return {"ok": False, "error": str(err), "problems": [{"message": p} for p in err.problems]}, []
    except JobRejected as err:
        return {"ok": False, "error": "workflow is invalid", "problems": [p.as_dict() for p in err.problems]}, []
    done = jobs.wait(job.id)
    if done is None or done.status != "done":
        return {"ok": False, "job": job.id, "error": done.error if done else f"job {job.id} was deleted"}, []
    for stale in folder.glob("*.png"):
        stale.unlink()
    files: list[str] = []
    image_files: dict[str, list[str]] = {}
    for item in done.files:
        if item.kind != "preview":
            continue
        path = folder / f"{len(files):03d}.png"
        atomic_write_bytes(path, Path(item.path).read_bytes())
        files.append(str(path))
        image_files.setdefault(item.node, []).append(path.name)
    summary = {"ok": True, "job": job.id, "ran": done.result["ran"], "cached": done.result["cached"],
               "seconds": round(done.result["seconds"], 4), "outputs": done.result["outputs"], "images": image_files}
    return summary, files


def build_app(session: Session | None = None, workflows_dir: str | Path | None = None,
              initial: dict[str, Any] | None = None, data_dir: str | Path | None = None, *,
              context: AppContext | None = None, inputs_dir: str | Path | None = None) -> gr.Blocks:
    """The Gradio Blocks: editor container + the `run_workflow` endpoint. Serve it with `create_server`;
    `blocks.nodegraph_context.close()` stops its job queue. `inputs_dir`: see `AppContext.inputs_dir`."""
    context = context if context is not None else make_context(session, workflows_dir, initial, data_dir,
                                                               inputs_dir)
    with gr.Blocks(title="nodegraph", fill_width=True) as blocks:
        gr.HTML('<div id="ng-root" class="ng-root">loading the editor...</div>', js_on_load=None,
                elem_id="ng-host", padding=False)
        with gr.Row(visible=False):
            workflow_in = gr.Textbox(label="workflow JSON")
            summary_out = gr.JSON(label="summary")
            files_out = gr.File(label="images", file_count="multiple")
            trigger = gr.Button("run")
        api_dir = Path(tempfile.mkdtemp(prefix="nodegraph-api-"))
        trigger.click(lambda text: run_workflow_json(context.jobs, text, api_dir), inputs=workflow_in,
                      outputs=[summary_out, files_out], api_name="run_workflow", concurrency_limit=1)
    blocks.nodegraph_context = context  # type: ignore[attr-defined]
    return blocks


def api_app(context: AppContext) -> FastAPI:
    """FastAPI with the jobs API and the editor's JSON routes (OpenAPI at /openapi.json, /docs)."""
    from nodegraph import __version__

    app = FastAPI(title="nodegraph", version=__version__,
                  description="Queue workflows (the same JSON as the workflow files), follow them, read their "
                              "outputs. See docs/api.md.")
    app.include_router(build_jobs_router(context.jobs))
    app.include_router(build_router(context.session, context.workflows_dir, context.initial, context.inputs_dir))
    app.state.nodegraph_context = context
    return app


def create_server(blocks: gr.Blocks, guard: GuardConfig | None = None) -> FastAPI:
    """The API (`api_app`), the editor's static files, and the Gradio page at '/'.

    Every route (Gradio's included) sits behind the `ui.guard.Guard` middleware: loopback Host
    names and same-origin requests only, a token when `guard.token` is set, bounded bodies.
    """
    app = api_app(blocks.nodegraph_context)  # type: ignore[attr-defined]
    app.mount("/ui-static", StaticFiles(directory=STATIC_DIR), name="ui-static")
    app = gr.mount_gradio_app(app, blocks, path="/", head=page_head(), footer_links=["api"],
                              max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False)
    install_guard(app, guard if guard is not None else GuardConfig(api_body_limit=MAX_UPLOAD_BYTES))
    return app


def create_api_server(context: AppContext, guard: GuardConfig | None = None) -> FastAPI:
    """`nodegraph serve`: the API without the editor page, behind the same guard."""
    app = api_app(context)
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


def data_folder(data_dir: str | None = None, environ: dict[str, str] | None = None) -> Path:
    """--data-dir, else $NODEGRAPH_DATA_DIR, else `.nodegraph` in the working folder."""
    env = os.environ if environ is None else environ
    return Path(data_dir or env.get("NODEGRAPH_DATA_DIR") or DEFAULT_DATA_DIR)


def main(workflow_path: str | None, host: str = "127.0.0.1", port: int = 7860,
         plugin_dirs: list[str] | None = None, token: str | None = None,
         allowed_hosts: list[str] | None = None, allowed_origins: list[str] | None = None,
         read_roots: list[str] | None = None, disabled_plugins: list[str] | None = None,
         only_plugins: list[str] | None = None, data_dir: str | None = None, output_dir: str = "outputs",
         editor: bool = True, disk_cache: str | os.PathLike | None = None,
         disk_cache_bytes: int = DEFAULT_LIMIT_BYTES, executor: str = "local", address: str | None = None,
         workers: int = 2) -> None:
    """Start the server and block until interrupted: `nodegraph ui` (editor=True, `python -m ui`) or
    `nodegraph serve` (editor=False: the API only).

    Nodes may read the working folder, `read_roots` and $NODEGRAPH_READ_ROOTS; they write to `output_dir`.
    Jobs are kept in `data_folder(data_dir)`; node outputs of storable types in the `disk_cache` folder
    (None: no disk cache), shared with `nodegraph run` and other servers. `disabled_plugins` /
    `only_plugins` select plugins as `nodegraph run` does (built-ins always load)."""
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
    session = Session(registry, output_dir=output_dir, read_roots=[Path.cwd(), *(read_roots or [])],
                      disk_cache=disk_cache, disk_cache_bytes=disk_cache_bytes)
    runner = None
    if executor == "ray":
        from nodegraph.ray_executor import RayExecutor, RayUnavailable, WorkerSpec

        try:
            runner = RayExecutor(WorkerSpec.like(session, plugin_dirs or [], disabled_plugins or (), only_plugins),
                                 workers=workers, address=address, local_session=session)
        except RayUnavailable as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    context = make_context(session, initial=initial, data_dir=data_folder(data_dir), executor=runner,
                           workers=workers if runner is not None else 1)
    if context.jobs.interrupted:
        print(f"jobs interrupted when the server last stopped: {', '.join(map(str, context.jobs.interrupted))} "
              "(nodegraph requeue ID to run one again)", file=sys.stderr)
    url = start_url(host, port, config)
    try:
        if editor:
            app = create_server(build_app(context=context), config)
            print(f"nodegraph editor on {url}", file=sys.stderr, flush=True)
        else:
            app = create_api_server(context, config)
            print(f"nodegraph server on {url} (API documentation: {url.split('?')[0]}docs)", file=sys.stderr,
                  flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        context.close()
