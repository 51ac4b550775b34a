"""Progress of a run drawn as text on a stream (stderr): `nodegraph run` and `nodegraph submit --wait`."""

from __future__ import annotations

from typing import TextIO

from .events import Event


class TextProgress:
    """Draws node progress on stderr: a line per node, a bar for steps inside long nodes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last_fraction = -1.0

    def __call__(self, event: Event) -> None:
        write = self.stream.write
        if event.kind == "node_start":
            write(f"  {event.node} ({event.type}) ...\n")
            self._last_fraction = -1.0
        elif event.kind == "node_skipped":
            write(f"  {event.node} skipped: {event.message}\n")
        elif event.kind == "node_cached":
            source = " (disk)" if event.info.get("source") == "disk" else ""
            write(f"  {event.node} ({event.type}) cached{source}\n")
        elif event.kind == "node_done":
            write(f"  {event.node} done in {event.seconds:.2f}s\n")
        elif event.kind == "warning":
            write(f"  warning: {event.node}: {event.message}\n")
        elif event.kind == "progress" and event.total:
            fraction = (event.step or 0) / event.total
            extras = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in event.info.items() if isinstance(v, (int, float, str)))
            bar = "#" * int(fraction * 30)
            line = f"    [{bar:<30}] {event.step}/{event.total} {extras}"
            if self.tty:
                write("\r" + line + ("\n" if event.step == event.total else ""))
            elif fraction >= self._last_fraction + 0.1 or event.step == event.total:
                write(line + "\n")
                self._last_fraction = fraction
        self.stream.flush()
