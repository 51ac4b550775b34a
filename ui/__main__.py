"""`python -m ui`: the editor, with the options of `nodegraph ui` (minus plugin selection).

    python -m ui [workflow.json] [--host H] [--port P] [--token T] [--allowed-host NAME ...]
                 [--allowed-origin ORIGIN ...] [--read-root DIR ...] [--plugins-dir DIR ...]
                 [--out DIR] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys

from nodegraph import SettingError

from .app import main

parser = argparse.ArgumentParser(prog="python -m ui", description="start the nodegraph browser editor")
parser.add_argument("workflow", nargs="?")
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, default=7860)
parser.add_argument("--token", help="require this token (default: NODEGRAPH_TOKEN; generated off loopback)")
parser.add_argument("--allowed-host", action="append", default=[], dest="allowed_hosts",
                    help="accept this Host name besides the loopback names (repeatable)")
parser.add_argument("--allowed-origin", action="append", default=[], dest="allowed_origins",
                    help="accept requests from this Origin besides the server's own (repeatable)")
parser.add_argument("--read-root", action="append", default=[], dest="read_roots",
                    help="a folder nodes may read besides the working folder (repeatable)")
parser.add_argument("--plugins-dir", action="append", default=[], dest="plugins_dir")
parser.add_argument("--out", default="outputs", help="output folder (default: outputs)")
parser.add_argument("--data-dir", help="jobs database and job images (default: $NODEGRAPH_DATA_DIR, else ./.nodegraph)")
args = parser.parse_args()
try:
    main(args.workflow, host=args.host, port=args.port, plugin_dirs=args.plugins_dir, token=args.token,
         allowed_hosts=args.allowed_hosts, allowed_origins=args.allowed_origins, read_roots=args.read_roots,
         data_dir=args.data_dir, output_dir=args.out)
except SettingError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
