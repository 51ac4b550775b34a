"""The `nodegraph` command: run, validate, nodes, plugins, plugin new, ui, serve, submit, history, requeue.

Exit codes: 0 ok, 1 a node failed (or the run was cancelled), 2 invalid input (workflow, --set,
device, arguments, a NODEGRAPH_* environment variable). User mistakes print one line on stderr,
never a traceback; `--debug` adds the traceback of a node failure (or of an unexpected error).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from .client import ApiError
from .confine import PathPolicy
from .disk_cache import default_disk_cache_dir
from .events import Event
from .jobs.store import StoreError
from .lists import sweep, variants
from .plugins import PluginReport, load_registry
from .progress import TextProgress
from .registry import Registry
from .remote_cli import REMOTE_COMMANDS, RemoteUsageError, add_remote_commands
from .session import DeviceError, NodeFailed, RunCancelled, Session
from .settings import SettingError, check_settings
from .validate import WorkflowInvalid, validate
from .workflow import Workflow, WorkflowFormatError, parse_cli_value

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    """A mistake in the command line or its inputs: exit 2 with the message."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (exit 2), not usage text plus the error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _path_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("paths (checked at validation, before anything runs)")
    group.add_argument("--out", default="outputs", metavar="DIR",
                       help="output folder: every file a node writes lands in it (default: outputs)")
    _read_root_option(group)
    return parent


def _read_root_option(group: Any) -> None:
    group.add_argument("--read-root", action="append", default=[], metavar="DIR",
                       help="a folder nodes may read besides the working folder and the output folder "
                            "(repeatable; also $NODEGRAPH_READ_ROOTS)")


def _plugin_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("plugins")
    group.add_argument("--debug", action="store_true", help="print tracebacks of node failures")
    group.add_argument("--plugins-dir", action="append", default=[], metavar="DIR",
                       help="load plugins from this folder (repeatable; also $NODEGRAPH_PLUGINS)")
    group.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                       help="do not load this plugin (repeatable)")
    group.add_argument("--only-plugins", metavar="A,B", help="load only these plugins (built-ins always load)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    plugin_opts, path_opts = _plugin_options(), _path_options()
    parser = _Parser(prog="nodegraph", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", parents=[plugin_opts, path_opts], help="run a workflow headlessly")
    run.add_argument("workflow")
    run.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                     help="override an input (JSON value, else a string); repeatable")
    run.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    run.add_argument("--outputs", metavar="ID,ID", help="run only what these nodes need")
    run.add_argument("--events", choices=["text", "json", "none"], default="text",
                     help="progress display on stderr (text), JSON lines on stdout (json), or none")
    run.add_argument("--repeat", type=_positive, default=1, help="run N times in one session (cache reused)")
    run.add_argument("--sweep", action="append", default=[], metavar="NODE.INPUT=V1,V2,...",
                     help="run for every value (several --sweep: every combination) as one run of a sweep: "
                          "outputs per value, shared work done once, noises solved as one batch")
    run.add_argument("--cache-mb", type=_positive, default=4096,
                     help="output cache budget in MiB (device memory on a GPU)")
    run.add_argument("--host-cache-mb", type=_positive, default=16384,
                     help="on a GPU: host memory in MiB for what the device cache evicts (moved, not dropped)")
    run.add_argument("--threads", type=_positive, metavar="N",
                     help="CPU threads for torch (1 avoids oversubscription when other jobs share the cores)")
    _disk_cache_options(run)
    _executor_options(run)

    check = sub.add_parser("validate", parents=[plugin_opts, path_opts],
                           help="check a workflow, list every problem")
    check.add_argument("workflow")
    check.add_argument("--json", action="store_true", help="problems as JSON")

    nodes = sub.add_parser("nodes", parents=[plugin_opts], help="list node types")
    nodes.add_argument("--json", action="store_true", help="every node type with its schema, as JSON")

    plugins = sub.add_parser("plugins", parents=[plugin_opts], help="list plugins and load failures")
    plugins.add_argument("--json", action="store_true")

    plugin = sub.add_parser("plugin", help="plugin authoring tools")
    plugin_sub = plugin.add_subparsers(dest="plugin_command", required=True)
    new = plugin_sub.add_parser("new", help="create a plugin package that installs and loads right away")
    new.add_argument("name", help="plugin name = node id namespace (my-nodes -> my_nodes/...)")
    new.add_argument("--dir", default=".", help="create the package folder in here (default: .)")

    server_opts = _server_options()
    ui = sub.add_parser("ui", parents=[plugin_opts, server_opts], help="start the browser editor (and the API)")
    ui.add_argument("workflow", nargs="?")
    sub.add_parser("serve", parents=[plugin_opts, server_opts], help="start the API server without the editor")
    add_remote_commands(sub, _positive)
    return parser


def _disk_cache_options(parser: argparse.ArgumentParser) -> None:
    """--disk-cache DIR / --no-disk-cache / --disk-cache-mb, shared by `run`, `ui` and `serve`."""
    disk = parser.add_argument_group("disk cache (outputs of storable types reused by later processes)")
    where = disk.add_mutually_exclusive_group()
    where.add_argument("--disk-cache", metavar="DIR",
                       help="keep it in DIR (default: $NODEGRAPH_DISK_CACHE, else $NODEGRAPH_DATA_DIR/cache, "
                            "else ~/.cache/nodegraph)")
    where.add_argument("--no-disk-cache", action="store_true", help="neither read nor write a disk cache")
    disk.add_argument("--disk-cache-mb", type=_positive, default=2048,
                      help="size limit in MiB; least recently used entries go first (default: 2048)")


def _executor_options(parser: argparse.ArgumentParser) -> None:
    """--executor local|ray, --address, --workers: where runs (and sweep elements, jobs) execute."""
    group = parser.add_argument_group("executor (see docs/engine.md, Many workers with Ray)")
    group.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: this process; ray: Ray actors, each holding a Session (pip install "
                            "\"nodegraph[ray]\")")
    group.add_argument("--address", metavar="ADDR", help="a running Ray cluster (default: start a local one)")
    group.add_argument("--workers", type=_positive, default=2, help="Ray workers (actors) to start (default: 2)")


def _disk_cache_dir(args: argparse.Namespace) -> Path | None:
    """The disk cache folder the options choose (None: switched off)."""
    return None if args.no_disk_cache else Path(args.disk_cache) if args.disk_cache else default_disk_cache_dir()


def _server_options() -> argparse.ArgumentParser:
    """Options of `ui` and `serve`: bind address, access (docs/ui.md#safety), folders."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--host", default="127.0.0.1")
    parent.add_argument("--port", type=_port, default=7860)
    access = parent.add_argument_group("access (see docs/ui.md)")
    access.add_argument("--token", help="require this token (default: $NODEGRAPH_TOKEN; one is generated "
                                        "when --host is not a loopback address)")
    access.add_argument("--allowed-host", action="append", default=[], dest="allowed_hosts", metavar="NAME",
                        help="accept this Host name besides the loopback names (repeatable; also "
                             "$NODEGRAPH_ALLOWED_HOSTS)")
    access.add_argument("--allowed-origin", action="append", default=[], dest="allowed_origins",
                        metavar="ORIGIN", help="accept requests from this Origin besides the server's own "
                                               "(repeatable; also $NODEGRAPH_ALLOWED_ORIGINS)")
    paths = parent.add_argument_group("paths (checked at validation, before anything runs)")
    _read_root_option(paths)
    paths.add_argument("--out", default="outputs", metavar="DIR",
                       help="output folder: every file a job's nodes write lands in it (default: outputs)")
    paths.add_argument("--data-dir", metavar="DIR",
                       help="the jobs database and job images (default: $NODEGRAPH_DATA_DIR, else ./.nodegraph)")
    _disk_cache_options(parent)
    _executor_options(parent)
    return parent


def _only_plugins(args: argparse.Namespace) -> list[str] | None:
    return [p.strip() for p in args.only_plugins.split(",") if p.strip()] if args.only_plugins else None


def _registry(args: argparse.Namespace) -> tuple[Registry, PluginReport]:
    """Plugins loaded, then every environment setting they read checked (SettingError: exit 2)."""
    registry, report = load_registry(args.plugins_dir, disabled=args.disable_plugin, only=_only_plugins(args))
    check_settings(registry)
    return registry, report


def _report_plugin_failures(report: PluginReport, stream: TextIO) -> None:
    for failure in report.failures:
        print(f"warning: plugin {failure.name!r} ({failure.source}) was skipped: {failure.error}", file=stream)


def _clip(text: str, limit: int = 80) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _read_roots(args: argparse.Namespace) -> list[str] | None:
    """The working folder plus --read-root folders (None: the default, the working folder only)."""
    return [str(Path.cwd()), *args.read_root] if args.read_root else None


def _load_workflow(path: str, overrides: Sequence[str]) -> Workflow:
    workflow = Workflow.load(path)
    for item in overrides:
        address, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected NODE.INPUT=VALUE")
        try:
            workflow.set(address.strip(), parse_cli_value(raw))
        except KeyError as err:
            raise UsageError(f"--set {_clip(item)}: {err.args[0]}") from None
        except ValueError as err:
            raise UsageError(f"--set {_clip(item)}: {err}") from None
    return workflow


def _describe(value: Any) -> str:
    if isinstance(value, list) and value and all(getattr(v, "shape", None) is not None or isinstance(v, list)
                                                 for v in value):
        text = f"list of {len(value)}: [" + ", ".join(_describe(v) for v in value[:3]) + (", ..." * (len(value) > 3))
        return (text if len(text) <= 197 else text[:193] + "...") + "]"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"tensor{tuple(shape)} {str(value.dtype).replace('torch.', '')}"
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def cmd_run(args: argparse.Namespace) -> int:
    registry, report = _registry(args)
    _report_plugin_failures(report, sys.stderr)
    workflow = _load_workflow(args.workflow, args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    disk_cache = _disk_cache_dir(args)
    session = Session(registry, device=args.device, cache_bytes=args.cache_mb << 20, output_dir=args.out,
                      read_roots=_read_roots(args), host_cache_bytes=args.host_cache_mb << 20,
                      disk_cache=disk_cache, disk_cache_bytes=args.disk_cache_mb << 20)
    plan = session.compile(workflow)
    outputs = [o.strip() for o in args.outputs.split(",") if o.strip()] if args.outputs else None
    unknown = [o for o in outputs or [] if o not in workflow.nodes]
    if unknown:
        raise UsageError(f"--outputs {', '.join(unknown)}: no such node in {args.workflow} "
                         f"(its nodes: {', '.join(sorted(workflow.nodes))})")
    if args.events == "json":
        listener = lambda e: print(json.dumps(e.as_dict()), flush=True)  # noqa: E731
    elif args.events == "text":
        listener = TextProgress(sys.stderr)
    else:
        listener = None
    if args.executor == "ray":
        return _run_on_ray(args, session, workflow, outputs, listener)
    if args.sweep:
        swept, labels = _sweep(workflow, args.sweep, session)
        plan = session.compile(swept)
        print(f"sweep of {len(labels)}: {'; '.join(labels)}", file=sys.stderr)
    print(f"running {args.workflow} on {session.device}", file=sys.stderr)
    for i in range(max(1, args.repeat)):
        result = session.run(plan, outputs=outputs, on_event=listener)
        print(f"run {i + 1}: {len(result.ran)} ran, {len(result.cached)} cached, "
              f"{result.seconds:.2f}s" + (f" (cached: {', '.join(result.cached)})" if result.cached else ""),
              file=sys.stderr)
        if result.elements:
            print("  elements run: " + ", ".join(f"{node} {len(counts.ran)}/{counts.total}"
                                                 for node, counts in result.elements.items()), file=sys.stderr)
    disk = session.disk_cache
    if disk is not None and args.events == "text":
        print(f"disk cache {disk.root}: {disk.hits} hits, {disk.stores} stored"
              + (f", {disk.corrupt} damaged entries recomputed" if disk.corrupt else ""), file=sys.stderr)
    if args.events != "json":
        for node_id, values in result.outputs.items():
            for name, value in values.items():
                print(f"{node_id}.{name} = {_describe(value)}")
    return EXIT_OK


def _run_on_ray(args: argparse.Namespace, session: Session, workflow: Workflow, outputs: list[str] | None,
                listener: Callable[[Event], None] | None) -> int:
    """`run --executor ray`: the workflow (or each element of --sweep, as its own run) on Ray workers."""
    from .ray_executor import RayExecutor, RayUnavailable

    try:
        executor = RayExecutor(_worker_spec(args, session), workers=args.workers, address=args.address,
                               local_session=session)
    except RayUnavailable as err:
        raise UsageError(str(err)) from None
    try:
        items = variants(workflow, _sweep_axes(workflow, args.sweep, session)) if args.sweep \
            else [("run", workflow)]
        print(f"running {args.workflow} on Ray: {len(executor.workers)} workers, {len(items)} run(s)",
              file=sys.stderr)
        for repeat in range(max(1, args.repeat)):
            results = executor.map([w for _, w in items], outputs,
                                   on_event=(lambda _i, e: listener(e)) if listener is not None else None)
            for (label, _), (result, worker) in zip(items, results, strict=True):
                print(f"{label} (repeat {repeat + 1}) on {worker}: {len(result.ran)} ran, {len(result.cached)} "
                      f"cached, {result.seconds:.2f}s", file=sys.stderr)
    finally:
        executor.close()
    if args.events != "json":
        for node_id, values in results[-1][0].outputs.items():
            for name, value in values.items():
                print(f"{node_id}.{name} = {_describe(value)}")
    return EXIT_OK


def _worker_spec(args: argparse.Namespace, session: Session) -> Any:
    """What each Ray worker needs to build a Session like this one."""
    from .ray_executor import WorkerSpec

    return WorkerSpec.like(session, args.plugins_dir, args.disable_plugin, _only_plugins(args), args.threads,
                           cache_bytes=args.cache_mb << 20)


def _sweep(workflow: Workflow, sweeps: Sequence[str], session: Session) -> tuple[Workflow, list[str]]:
    """The workflow with each swept input fed by a sweep (`nodegraph.lists.sweep`), and a label per element."""
    try:
        return sweep(workflow, _sweep_axes(workflow, sweeps, session))
    except KeyError as err:
        raise UsageError(f"--sweep {err.args[0]}") from None


def _sweep_axes(workflow: Workflow, sweeps: Sequence[str], session: Session) -> list[tuple[str, list[Any]]]:
    """(address, values) of each --sweep. Each value is first validated where it will go, so a bad one
    stops everything before anything runs."""
    registry = session.registry
    axes = []
    for item in sweeps:
        address, sep, raw = item.partition("=")
        if not sep or not raw:
            raise UsageError(f"--sweep {item!r}: expected NODE.INPUT=V1,V2,...")
        try:
            values = parse_cli_value(raw) if raw.startswith("[") else [parse_cli_value(v) for v in raw.split(",")]
        except ValueError as err:
            raise UsageError(f"--sweep {_clip(item)}: {err}") from None
        if not isinstance(values, list) or not values:
            raise UsageError(f"--sweep {item!r}: the values must be a JSON list or comma-separated")
        address = address.strip()
        node_id, _, input_name = address.rpartition(".")
        node_type = registry.nodes.get(workflow.nodes[node_id].type) if node_id in workflow.nodes else None
        spec = node_type.inputs.get(input_name) if node_type is not None else None
        if spec is not None and not spec.is_widget:
            raise UsageError(f"--sweep {address}: this input is a {spec.socket.name} socket, not a value")
        for value in values:
            try:
                problems = validate(workflow.copy_deep().set(address, value), registry, session.paths)
            except KeyError as err:
                raise UsageError(f"--sweep {address}: {err.args[0]}") from None
            if problems:
                raise WorkflowInvalid(problems)
        axes.append((address, values))
    return axes


def cmd_validate(args: argparse.Namespace) -> int:
    registry, report = _registry(args)
    _report_plugin_failures(report, sys.stderr)
    workflow = _load_workflow(args.workflow, [])
    problems = validate(workflow, registry, PathPolicy.build(args.out, _read_roots(args), registry))
    if args.json:
        print(json.dumps({"valid": not problems, "problems": [p.as_dict() for p in problems]}, indent=2))
    elif problems:
        print(WorkflowInvalid(problems), file=sys.stderr)
    else:
        print(f"{args.workflow}: valid ({len(workflow.nodes)} nodes)")
    return EXIT_INVALID if problems else EXIT_OK


def cmd_nodes(args: argparse.Namespace) -> int:
    registry, report = _registry(args)
    _report_plugin_failures(report, sys.stderr)
    if args.json:
        types = {name: {"color": t.color, "lineage": t.lineage(), "description": t.description}
                 for name, t in registry.types.items()}
        print(json.dumps({"types": types, "nodes": [t.schema(registry) for t in registry.nodes.values()]}, indent=2))
        return EXIT_OK
    by_category: dict[str, list] = {}
    for node_type in registry.nodes.values():
        by_category.setdefault(node_type.category, []).append(node_type)
    for category in sorted(by_category):
        print(f"{category}:")
        for node_type in sorted(by_category[category], key=lambda t: t.id):
            ins = ", ".join(f"{n}: {s.socket.name}" for n, s in node_type.inputs.items())
            outs = ", ".join(f"{n}: {s.socket.name}" for n, s in node_type.outputs.items())
            print(f"  {node_type.id} v{node_type.version}  ({ins}) -> ({outs})")
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    registry, report = _registry(args)
    if args.json:
        print(json.dumps([p.as_dict() for p in report.plugins], indent=2))
        return EXIT_OK
    for plugin in report.plugins:
        version = f" {plugin.version}" if plugin.version else ""
        if plugin.ok:
            print(f"{plugin.name}{version} [{plugin.source}]: {len(plugin.node_ids)} nodes")
            for node_id in plugin.node_ids:
                print(f"    {node_id}")
        else:
            print(f"{plugin.name}{version} [{plugin.source}]: FAILED: {plugin.error}")
    return EXIT_OK


def cmd_plugin(args: argparse.Namespace) -> int:
    from .scaffold import PluginNames, ScaffoldError, new_plugin

    try:
        root = new_plugin(args.name, args.dir)
    except ScaffoldError as err:
        raise UsageError(str(err)) from None
    names = PluginNames.from_name(args.name)
    print(f"created {root}")
    print(f"  nodes:   {names.namespace}/... in {root / names.package / 'nodes.py'}")
    print(f"  install: pip install -e {root}")
    print(f"  check:   nodegraph plugins   (then: python -m pytest {root / 'tests'})")
    return EXIT_OK


APPS_GROUP = "nodegraph.apps"


def find_app(name: str) -> Callable[..., Any]:
    """The app registered as `name` in the `nodegraph.apps` entry points (the engine never imports the UI)."""
    found = [ep for ep in importlib.metadata.entry_points(group=APPS_GROUP) if ep.name == name]
    if not found:
        raise UsageError(f"no browser editor is installed (entry point {name!r} in group {APPS_GROUP!r})")
    return found[0].load()


def _start_server(args: argparse.Namespace, workflow: str | None, editor: bool) -> int:
    """Start the app "ui" (`ui.app.main`) with every option given here; it blocks until interrupted."""
    find_app("ui")(workflow, host=args.host, port=args.port, plugin_dirs=args.plugins_dir, token=args.token,
                   allowed_hosts=args.allowed_hosts, allowed_origins=args.allowed_origins,
                   read_roots=args.read_root, disabled_plugins=args.disable_plugin,
                   only_plugins=_only_plugins(args), data_dir=args.data_dir, output_dir=args.out, editor=editor,
                   disk_cache=_disk_cache_dir(args), disk_cache_bytes=args.disk_cache_mb << 20,
                   executor=args.executor, address=args.address, workers=args.workers)
    return EXIT_OK


def cmd_ui(args: argparse.Namespace) -> int:
    return _start_server(args, args.workflow, editor=True)


def cmd_serve(args: argparse.Namespace) -> int:
    return _start_server(args, None, editor=False)


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "nodes": cmd_nodes, "plugins": cmd_plugins,
            "plugin": cmd_plugin, "ui": cmd_ui, "serve": cmd_serve, **REMOTE_COMMANDS}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    debug = getattr(args, "debug", False)
    try:
        code = COMMANDS[args.command](args)
    except (WorkflowFormatError, WorkflowInvalid, UsageError, RemoteUsageError, DeviceError, SettingError,
            StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except ApiError as err:  # the server refused (4xx: our request) or failed (5xx)
        print(f"error: the server answered {err}", file=sys.stderr)
        return EXIT_INVALID if err.status < 500 else EXIT_FAILED
    except RecursionError:
        print("error: an input is nested too deeply", file=sys.stderr)
        return EXIT_INVALID
    except NodeFailed as err:
        if debug:
            traceback.print_exception(err.cause if isinstance(err.cause, BaseException) else err, file=sys.stderr)
        print(f"error: {err}" + ("" if debug else " (run with --debug for the traceback)"), file=sys.stderr)
        return EXIT_FAILED
    except RunCancelled as err:
        print(f"cancelled: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a file or port the command was pointed at: a user matter, one line
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as err:  # noqa: BLE001 - a bug, still one line unless --debug
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"error: unexpected {type(err).__name__}: {err}"
              + ("" if debug else " (run with --debug for the traceback)"), file=sys.stderr)
        return EXIT_FAILED
    if args.command == "run":
        print(f"done in {time.perf_counter() - started:.2f}s", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
