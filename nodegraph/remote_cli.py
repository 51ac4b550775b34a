"""`nodegraph submit`, `history` and `requeue`: the CLI as a client of a running server (docs/api.md).

    nodegraph submit WF.json [--set NODE.INPUT=VALUE ...] [--priority N] [--wait] [--json]
    nodegraph history [--status S ...] [--limit N] [--before ID] [--json]
    nodegraph requeue ID [--key KEY]

Each takes --server URL (default $NODEGRAPH_SERVER, else http://127.0.0.1:7860) and --token T
(default $NODEGRAPH_TOKEN). `submit --wait` follows the job's events like `run` draws progress and
exits like `run`: 0 done, 1 failed / cancelled / interrupted, 2 invalid workflow or request.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from .client import ApiError, Client
from .events import Event
from .job_keys import recall, remember
from .jobs.store import STATUSES
from .progress import TextProgress
from .workflow import Workflow, parse_cli_value

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
DEFAULT_SERVER = "http://127.0.0.1:7860"


class RemoteUsageError(Exception):
    """A mistake in the command line: exit 2 with the message."""


def _server_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("server")
    group.add_argument("--server", default=os.environ.get("NODEGRAPH_SERVER", DEFAULT_SERVER), metavar="URL",
                       help="the nodegraph serve / ui server (default: $NODEGRAPH_SERVER or %(default)s)")
    group.add_argument("--token", default=os.environ.get("NODEGRAPH_TOKEN"),
                       help="the server's token (default: $NODEGRAPH_TOKEN)")
    return parent


def add_remote_commands(sub: Any, positive: Any) -> None:
    server = _server_options()
    submit = sub.add_parser("submit", parents=[server], help="queue a workflow on a server")
    submit.add_argument("workflow")
    submit.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                        help="override an input (JSON value, else a string); repeatable")
    submit.add_argument("--priority", type=int, default=0, help="higher runs first (default 0)")
    submit.add_argument("--wait", action="store_true", help="follow the job, show progress, exit like `run`")
    submit.add_argument("--json", action="store_true", help="print {id, key, status} (and the job at the end)")

    history = sub.add_parser("history", parents=[server], help="list a server's jobs, newest first")
    history.add_argument("--status", action="append", choices=STATUSES, default=[], help="only these (repeatable)")
    history.add_argument("--limit", type=positive, default=50)
    history.add_argument("--before", type=positive, metavar="ID", help="jobs with smaller ids (the next page)")
    history.add_argument("--json", action="store_true")

    requeue = sub.add_parser("requeue", parents=[server], help="queue a failed, cancelled or interrupted job again")
    requeue.add_argument("job", type=positive)
    requeue.add_argument("--key", help="the job's key (`submit --json` prints it); not needed with the token or "
                                       "for jobs submitted by this user from here (`submit` keeps their keys)")


def overrides_of(items: Sequence[str]) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for item in items:
        address, sep, raw = item.partition("=")
        node_id, dot, input_name = address.strip().rpartition(".")
        if not sep or not dot or not node_id or not input_name:
            raise RemoteUsageError(f"--set {item[:80]!r}: expected NODE.INPUT=VALUE")
        try:
            overrides[address.strip()] = parse_cli_value(raw)
        except ValueError as err:
            raise RemoteUsageError(f"--set {item[:80]!r}: {err}") from None
    return overrides


def describe(summary: Any) -> str:
    if isinstance(summary, dict) and summary.get("kind") == "tensor":
        return f"tensor{tuple(summary['shape'])} {summary['dtype']}"
    if isinstance(summary, dict) and "repr" in summary:
        return summary["repr"]
    return json.dumps(summary)


def cmd_submit(args: argparse.Namespace) -> int:
    workflow = Workflow.load(args.workflow)  # a format error is exit 2 here, before any request
    client = Client(args.server, args.token)
    try:
        job = client.submit(workflow.to_dict(), overrides_of(args.set), priority=args.priority)
    except ApiError as err:
        if err.status != 422:
            raise
        print(f"error: {args.workflow}: {err.message}", file=sys.stderr)
        for problem in err.problems:
            where = ".".join(p for p in (problem.get("node"), problem.get("input")) if p)
            print(f"  - {where + ': ' if where else ''}{problem['message']} [{problem['kind']}]", file=sys.stderr)
        return EXIT_INVALID
    remember(args.server, job, client.keys[job])  # so `requeue` needs no --key
    if args.json:
        print(json.dumps({"id": job, "key": client.keys[job], "status": "queued"}), flush=True)
    else:
        print(job, flush=True)
    if not args.wait:
        return EXIT_OK
    progress = TextProgress(sys.stderr)
    final = client.wait(job, on_event=lambda data: progress(Event.from_dict(data)))
    seconds = final["seconds"] or 0.0
    print(f"job {job} {final['status']} in {seconds:.2f}s: {len(final['ran'])} ran, {len(final['cached'])} cached",
          file=sys.stderr)
    if args.json:
        print(json.dumps(final))
    elif final["status"] == "done":
        for node_id, values in final["outputs"].items():
            for name, summary in values.items():
                print(f"{node_id}.{name} = {describe(summary)}")
        for item in final["files"]:
            print(f"{item['node']}[{item['index']}] {item['kind']}: {args.server.rstrip('/')}{item['url']}")
    if final["status"] != "done":
        print(f"error: {final['error'] or final['status']}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def cmd_history(args: argparse.Namespace) -> int:
    page = Client(args.server, args.token).history(args.status, limit=args.limit, before=args.before)
    if args.json:
        print(json.dumps(page, indent=2))
        return EXIT_OK
    print(f"{'id':>6}  {'status':<11}  {'queued':<19}  {'seconds':>8}  {'worker':<9}  name / error")
    for job in page["jobs"]:
        seconds = f"{job['seconds']:.2f}" if job["seconds"] is not None else "-"
        where = f"[{job['error_node']}] " if job["error_node"] else ""
        note = job["name"] + (f"  {where}{job['error']}" if job["error"] else "")
        worker = job.get("worker") or "-"
        print(f"{job['id']:>6}  {job['status']:<11}  {_when(job['queued_at']):<19}  {seconds:>8}  {worker:<9}  {note}")
    shown = len(page["jobs"])
    more = f"; next page: --before {page['next_before']}" if page["next_before"] else ""
    print(f"{shown} of {page['total']} job(s){more}", file=sys.stderr)
    return EXIT_OK


def cmd_requeue(args: argparse.Namespace) -> int:
    key = args.key or recall(args.server, args.job)
    client = Client(args.server, args.token, keys={args.job: key} if key else None)
    job = client.requeue(args.job)
    print(f"job {job['id']} {job['status']}")
    return EXIT_OK


REMOTE_COMMANDS = {"submit": cmd_submit, "history": cmd_history, "requeue": cmd_requeue}
