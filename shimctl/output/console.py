"""The one writer of shimctl's output: results on stdout (text or one JSON document), errors,
warnings, shim logs and progress on stderr.

A `Console` learns the facts about its streams once, when it is made (as httpie's
`Environment` does): whether each is a terminal, and whether colour is wanted — plain,
aligned, colourless text when stdout is not a terminal or NO_COLOR is set. rich is imported
only when it will be used.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from shimctl.output import jsondoc
from shimctl.output.text import MULTILINE, age, finding_lines, printable, short_runtime, table

if TYPE_CHECKING:
    from click import ClickException

    from shimctl.errors import ShimctlError
    from shimctl.models.findings import ReconcileReport
    from shimctl.models.info import (
        ComponentVersion,
        DoctorReport,
        Event,
        EventsResult,
        VersionInfo,
    )
    from shimctl.models.results import DeleteResult, StartResult
    from shimctl.output.progress import ProgressBar

# Re-exported: the document's version is part of the console's contract (tools/docgen.py).
SCHEMA_VERSION = jsondoc.SCHEMA_VERSION


def use_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    # no-color.org: NO_COLOR counts when it is set and not empty.
    if (os.environ if environ is None else environ).get("NO_COLOR"):
        return False
    return stream.isatty()


class Console:
    """Owns stdout and stderr for one run. `json_output`: results as one JSON document;
    `quiet`: text results are left out (JSON documents and errors never are)."""

    def __init__(
        self,
        *,
        json_output: bool = False,
        quiet: bool = False,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.json_output = json_output
        self.quiet = quiet
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        self.stdout_isatty = self.stdout.isatty()
        self.stderr_isatty = self.stderr.isatty()
        self.color = use_color(self.stdout, environ)

    # -- building blocks ------------------------------------------------------------------------

    def result(self, command: str, result: Any, *, text: list[tuple[str, Any]]) -> None:
        """Print one command result: a JSON document, or aligned `key: value` lines."""
        if self.json_output:
            self.stdout.write(jsondoc.result_document(command, result))
            return
        if self.quiet:
            return
        rows = [(k, v) for k, v in text if v is not None and v != []]
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            if isinstance(value, list):
                value = "; ".join(str(v) for v in value)
            self.stdout.write(f"{key + ':':<{width + 1}} {printable(str(value))}\n")

    def table(
        self, headers: list[str], rows: list[list[str]], notes: Sequence[Sequence[str]] = ()
    ) -> None:
        table(self.stdout, headers, rows, color=self.color, notes=notes)

    # -- stderr ---------------------------------------------------------------------------------

    def error(self, err: ShimctlError, *, document: bool = True) -> None:
        """The error on stderr; with --json also as the run's JSON document, unless the run
        printed its document already (`document=False`)."""
        self.stderr.write(f"shimctl: error: {printable(err.message, keep=MULTILINE)}\n")
        if err.hint:
            self.stderr.write(f"shimctl: hint: {printable(err.hint, keep=MULTILINE)}\n")
        if self.json_output and document:
            with contextlib.suppress(OSError):  # stdout itself may be what failed
                self.stdout.write(jsondoc.error_document(err))

    def warn(self, message: str) -> None:
        self.stderr.write(f"shimctl: warning: {printable(message, keep=MULTILINE)}\n")

    def interrupted(self) -> None:
        self.stderr.write("shimctl: interrupted\n")

    def usage_error(self, err: ClickException) -> None:
        """click's own report of a usage error (usage line and message), on our stderr."""
        err.show(file=self.stderr)

    def shim_log(self, data: bytes) -> None:
        """What a shim started with --debug writes to its log fifo, as it arrives."""
        self.stderr.buffer.write(data)
        self.stderr.buffer.flush()

    def progress(self, *, enabled: bool = True) -> ProgressBar:
        """A progress bar for load/gc on stderr (shown only when stderr is a terminal)."""
        from shimctl.output.progress import ProgressBar

        return ProgressBar(self.stderr, enabled=enabled)

    # -- one method per view --------------------------------------------------------------------

    def start(self, result: StartResult) -> None:
        self.result(
            "start",
            result,
            text=[
                ("id", result.id),
                ("namespace", result.namespace),
                ("bundle", result.bundle),
                ("address", result.address),
                ("api", f"task v{result.api_version}"),
                ("shim pid", result.shim_pid),
                ("runtime", result.runtime),
                ("sandbox", result.sandbox),
            ],
        )

    def delete(self, result: DeleteResult) -> None:
        self.result(
            "delete",
            result,
            text=[
                ("id", result.id),
                ("namespace", result.namespace),
                ("exit status", result.exit_status),
                ("pid", result.pid),
                ("exited at", result.exited_at),
                ("via", result.method),
                ("shim stopped", "yes" if result.shim_stopped else "no"),
                ("notes", result.notes),
            ],
        )

    def publish(self, event: Event) -> None:
        """`publish` is quiet unless --json (a shim runs it; nobody reads its text)."""
        if self.json_output:
            self.result("publish", event, text=[])

    def report(self, rep: ReconcileReport) -> None:
        """A ReconcileReport: list's table, or load/gc's actions and summary line."""
        if self.json_output:
            self.result(rep.command, rep, text=[])
            return
        if rep.command == "list":
            self._list_table(rep)
            return
        acted = [f for f in rep.findings if f.outcome is not None or f.kind == "hung"]
        if not self.quiet:
            if acted:
                headers = ["NAMESPACE", "ID", "KIND", "ACTION", "OUTCOME", "DETAIL"]
                self.table(
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
                    [finding_lines(f) for f in acted],
                )
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(rep.counts.items())) or "nothing"
            verb = "would act on" if rep.dry_run else "acted on"
            done = sum(1 for f in rep.findings if f.outcome in ("done", "dry-run"))
            self.stdout.write(
                f"{rep.command}: found {kinds}; {verb} {done}, failed {rep.errors}"
                f" ({rep.duration_seconds:.2f}s)\n"
            )
        for f in rep.findings:
            if f.outcome == "failed":
                text = printable(f"{f.kind} {f.namespace}/{f.id}: {f.error}", keep=MULTILINE)
                self.stderr.write(f"shimctl: error: {text}\n")

    def _list_table(self, rep: ReconcileReport) -> None:
        headers = ["NAMESPACE", "ID", "KIND", "STATUS", "OWNER", "SHIM PID", "TASK PIDS"]
        headers += ["RUNTIME", "API", "AGE"]
        rows = [
            [
                f.namespace or "-",
                f.id or "-",
                f.kind,
                f.task_status or "-",
                f.owner or "-",
                str(f.shim_pid or "-"),
                ",".join(map(str, f.task_pids)) or "-",
                short_runtime(f.runtime),
                f"v{f.api_version}/{f.protocol}" if f.api_version else "-",
                age(f.age_seconds),
            ]
            for f in rep.findings
        ]
        if rows:
            self.table(headers, rows, [finding_lines(f) for f in rep.findings])
        elif not self.quiet:
            self.stdout.write("no shims, bundles or leftovers found\n")

    def logs(self, chunks: Iterable[bytes]) -> None:
        """Copy a shim's log to stdout as it arrives: raw bytes into a pipe or file; on a
        terminal, decoded, with control characters escaped (a log line cannot drive it)."""
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        for chunk in chunks:
            if self.stdout_isatty:
                self.stdout.write(printable(decoder.decode(chunk), keep=MULTILINE))
                self.stdout.flush()
            else:
                self.stdout.buffer.write(chunk)
                self.stdout.buffer.flush()

    def version(self, info: VersionInfo) -> None:
        def describe(c: ComponentVersion) -> str:
            if c.version:
                return f"{c.version} ({c.path})"
            if c.path is None:
                return f"not found: {c.error}"
            return f"unknown: {c.error} ({c.path})"

        text: list[tuple[str, Any]] = [
            ("shimctl", info.shimctl),
            ("python", info.python),
            ("containerd", describe(info.containerd)),
        ]
        text += [(f"shim {s.name}", describe(s)) for s in info.shims]
        self.result("version", info, text=text)

    def doctor(self, rep: DoctorReport) -> None:
        """A checklist: one line per check, with its fix underneath when it is not ok."""
        if self.json_output:
            self.result("doctor", rep, text=[])
            return
        width = max((len(c.name) for c in rep.checks), default=0)
        rich_console = None
        if self.color:
            from rich.console import Console as RichConsole

            rich_console = RichConsole(file=self.stdout, highlight=False)
        for c in rep.checks:
            mark, style = _MARKS.get(c.status, (c.status, ""))
            cells = (f"[{mark}]".ljust(7), c.name.ljust(width), printable(c.detail))
            if rich_console is not None:
                from rich.text import Text

                rich_console.print(
                    Text.assemble((cells[0], style), f"{cells[1]}  {cells[2]}"), soft_wrap=True
                )
            else:
                self.stdout.write(f"{cells[0]}{cells[1]}  {cells[2]}\n")
            if c.fix and c.status != "ok":
                self.stdout.write(f"{'':7}{'':{width}}  fix: {printable(c.fix)}\n")
        failed = sum(1 for c in rep.checks if c.status == "fail")
        warned = sum(1 for c in rep.checks if c.status == "warn")
        self.stdout.write(f"doctor: {len(rep.checks)} checks, {failed} failed, {warned} warnings\n")

    def events(self, result: EventsResult) -> None:
        if self.json_output:
            self.result("events", result, text=[])
            return
        if result.events:
            self.table(
                ["TIME", "NAMESPACE", "TOPIC", "TYPE", "BYTES"],
                [
                    [e.time, e.namespace, e.topic, e.type_url, str(_b64_size(e.value))]
                    for e in result.events
                ],
            )
        elif not self.quiet:
            self.stdout.write(f"no events in {result.journal}\n")
        if result.skipped:
            self.warn(f"{result.skipped} line(s) of {result.journal} are not events; skipped")


_MARKS = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "bold red")}


def _b64_size(value: str) -> int:
    return len(value) * 3 // 4 - value.count("=")
