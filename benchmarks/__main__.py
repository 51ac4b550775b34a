"""Run benchmarks by name: `python -m benchmarks [NAME ...] [-- MODULE ARGS]`, `--list` to list them.

With no name every benchmark runs in turn. Each module's `main()` sees a clean `sys.argv` (its own
name, then only what follows `--`), so a module that parses its own arguments never trips over
the runner's.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path


def benchmark_names() -> list[str]:
    """Every benchmark module (a module of this package not starting with '_'), sorted."""
    folder = Path(__file__).parent
    return sorted(info.name for info in pkgutil.iter_modules([str(folder)]) if not info.name.startswith("_"))


def run(name: str, module_args: Sequence[str] = ()) -> None:
    """Call one benchmark's `main()` with `sys.argv` set to just its own arguments."""
    module = importlib.import_module(f"benchmarks.{name}")
    saved = sys.argv
    sys.argv = [f"benchmarks.{name}", *module_args]
    try:
        module.main()
    finally:
        sys.argv = saved


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    module_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, module_args = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--list", action="store_true", help="print the benchmark names and exit")
    args = parser.parse_args(argv)
    available = benchmark_names()
    if args.list:
        print("\n".join(available))
        return
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(available)}")
    for name in args.names or available:
        print(f"\n== {name} ==")
        run(name, module_args)


if __name__ == "__main__":
    main()
