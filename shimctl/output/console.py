"""The one place shimctl writes output: results to stdout (text or JSON), errors to stderr.

Plain, aligned, colourless text when stdout is not a terminal or NO_COLOR is set; rich is
imported only when it will be used.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import os
import sys
import threading
from collections.abc import Iterable
from typing import Any, TextIO

from shimctl.errors import ShimctlError

SCHEMA_VERSION = 1
# Error text may span lines (a shim's output); other control characters are escaped.
_MULTILINE = "\n\t"


def use_color(stream: TextIO) -> bool:
    # no-color.org: NO_COLOR counts when it is set and not empty.
    if os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


class Renderer:
    def __init__(self, *, json_output: bool, quiet: bool = False) -> None:
        self.json_output = json_output
        self.quiet = quiet

    def result(self, command: str, result: Any, *, text: list[tuple[str, Any]]) -> None:
        """Print one command result: a JSON document, or `key: value` lines."""
        if self.json_output:
            doc = {
                "schema_version": SCHEMA_VERSION,
                "command": command,
                "result": to_jsonable(result),
            }
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            return
        if self.quiet:
            return
        rows = [(k, v) for k, v in text if v is not None and v != []]
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            sys.stdout.write(f"{key + ':':<{width + 1}} {printable(str(value))}\n")

    def error(self, err: ShimctlError) -> None:
        sys.stderr.write(f"shimctl: error: {printable(err.message, keep=_MULTILINE)}\n")
        if err.hint:
            sys.stderr.write(f"shimctl: hint: {printable(err.hint, keep=_MULTILINE)}\n")
        if self.json_output:
            doc = {
                "schema_version": SCHEMA_VERSION,
                "error": {"kind": err.kind, "message": err.message, "exit_code": err.exit_code},
            }
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")

    def warn(self, message: str) -> None:
        sys.stderr.write(f"shimctl: warning: {printable(message, keep=_MULTILINE)}\n")


def to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ != "builtins":
        return value.value  # enums
    return value


def printable(text: str, *, keep: str = "") -> str:
    """`text` with control characters shown as escapes (\\n, \\x1b, ...), except those in
    `keep`: nothing a shim or a directory name holds can drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _short_runtime(path: str | None) -> str:
    return path.rsplit("/", 1)[-1] if path else "-"


def table(headers: list[str], rows: list[list[str]]) -> None:
    """A table on stdout: rich on a colour terminal, plain aligned columns otherwise."""
    # Cells come from directory names and shim output: never let them carry terminal control
    # sequences, nor (on a terminal) rich markup.
    rows = [
        row if "".join(row).isprintable() else [printable(cell) for cell in row] for row in rows
    ]
    if use_color(sys.stdout):
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        t = Table(*headers, box=None, header_style="bold")
        for row in rows:
            t.add_row(*(Text(cell) for cell in row))
        Console().print(t)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        sys.stdout.write(line.rstrip() + "\n")


def report(renderer: Renderer, rep: Any) -> None:
    """Render a ReconcileReport (list, load or gc)."""
    if renderer.json_output:
        renderer.result(rep.command, rep, text=[])
        return
    if rep.command == "list":
        headers = ["NAMESPACE", "ID", "KIND", "SHIM PID", "TASK PIDS", "RUNTIME", "API", "AGE"]
        rows = [
            [
                f.namespace or "-",
                f.id or "-",
                f.kind,
                str(f.shim_pid or "-"),
                ",".join(map(str, f.task_pids)) or "-",
                _short_runtime(f.runtime),
                f"v{f.api_version}/{f.protocol}" if f.api_version else "-",
                _age(f.age_seconds),
            ]
            for f in rep.findings
        ]
        if rows:
            table(headers, rows)
        elif not renderer.quiet:
            sys.stdout.write("no shims, bundles or leftovers found\n")
        return
    acted = [f for f in rep.findings if f.outcome is not None or f.kind == "hung"]
    if not renderer.quiet:
        if acted:
            headers = ["NAMESPACE", "ID", "KIND", "ACTION", "OUTCOME", "DETAIL"]
            table(
                headers,
                [
                    [
                        f.namespace or "-",
                        f.id or "-",
                        f.kind,
                        f.action,
                        f.outcome or "-",
                        f.error or f.reason,
                    ]
                    for f in acted
                ],
            )
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(rep.counts.items())) or "nothing"
        verb = "would act on" if rep.dry_run else "acted on"
        done = sum(1 for f in rep.findings if f.outcome in ("done", "dry-run"))
        sys.stdout.write(
            f"{rep.command}: found {kinds}; {verb} {done}, failed {rep.errors}"
            f" ({rep.duration_seconds:.2f}s)\n"
        )
    for f in rep.findings:
        if f.outcome == "failed":
            text = printable(f"{f.kind} {f.namespace}/{f.id}: {f.error}", keep=_MULTILINE)
            sys.stderr.write(f"shimctl: error: {text}\n")


# -- logs, version, doctor, events, progress ----------------------------------------------------


def stream(chunks: Iterable[bytes]) -> None:
    """Copy a shim's log to stdout as it arrives: raw bytes into a pipe or file; on a
    terminal, decoded, with control characters escaped (a log line cannot drive it)."""
    tty = sys.stdout.isatty()
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for chunk in chunks:
        if tty:
            sys.stdout.write(printable(decoder.decode(chunk), keep=_MULTILINE))
            sys.stdout.flush()
        else:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()


def version(renderer: Renderer, info: Any) -> None:
    def describe(c: Any) -> str:
        if c.version:
            return f"{c.version} ({c.path})"
        return f"not found: {c.error}" if c.path is None else f"unknown: {c.error} ({c.path})"

    text: list[tuple[str, Any]] = [
        ("shimctl", info.shimctl),
        ("python", info.python),
        ("containerd", describe(info.containerd)),
    ]
    text += [(f"shim {s.name}", describe(s)) for s in info.shims]
    renderer.result("version", info, text=text)


_MARKS = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "bold red")}


def doctor(renderer: Renderer, rep: Any) -> None:
    """A checklist: one line per check, with its fix underneath when it is not ok."""
    if renderer.json_output:
        renderer.result("doctor", rep, text=[])
        return
    width = max((len(c.name) for c in rep.checks), default=0)
    color = use_color(sys.stdout)
    console = None
    if color:
        from rich.console import Console

        console = Console(highlight=False)
    for c in rep.checks:
        mark, style = _MARKS.get(c.status, (c.status, ""))
        cells = (f"[{mark}]".ljust(7), c.name.ljust(width), printable(c.detail))
        if console is not None:
            from rich.text import Text

            console.print(
                Text.assemble((cells[0], style), f"{cells[1]}  {cells[2]}"), soft_wrap=True
            )
        else:
            sys.stdout.write(f"{cells[0]}{cells[1]}  {cells[2]}\n")
        if c.fix and c.status != "ok":
            sys.stdout.write(f"{'':7}{'':{width}}  fix: {printable(c.fix)}\n")
    failed = sum(1 for c in rep.checks if c.status == "fail")
    warned = sum(1 for c in rep.checks if c.status == "warn")
    sys.stdout.write(f"doctor: {len(rep.checks)} checks, {failed} failed, {warned} warnings\n")


def _b64_size(value: str) -> int:
    return len(value) * 3 // 4 - value.count("=")


def events(renderer: Renderer, result: Any) -> None:
    if renderer.json_output:
        renderer.result("events", result, text=[])
        return
    if result.events:
        table(
            ["TIME", "NAMESPACE", "TOPIC", "TYPE", "BYTES"],
            [
                [e.time, e.namespace, e.topic, e.type_url, str(_b64_size(e.value))]
                for e in result.events
            ],
        )
    elif not renderer.quiet:
        sys.stdout.write(f"no events in {result.journal}\n")
    if result.skipped:
        renderer.warn(f"{result.skipped} line(s) of {result.journal} are not events; skipped")


# Below this many items a run is quick: no bar.
PROGRESS_MIN_ITEMS = 8
_PHASES = {"inspect": "inspecting shims", "apply": "applying actions"}


class ProgressBar:
    """`progress(phase, done, total)` as a rich bar on stderr, only when stderr is a
    terminal and a phase has PROGRESS_MIN_ITEMS items or more. Nothing ever goes to stdout."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled and self._stream.isatty()
        self._lock = threading.Lock()
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self._enabled or total < PROGRESS_MIN_ITEMS:
            return
        with self._lock:
            if self._progress is None:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                self._progress = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    console=Console(file=self._stream),
                    transient=True,
                )
                self._progress.start()
            task = self._tasks.get(phase)
            if task is None:
                task = self._progress.add_task(_PHASES.get(phase, phase), total=total)
                self._tasks[phase] = task
            self._progress.update(task, completed=done, total=total)

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
