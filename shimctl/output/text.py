"""Text that reaches a terminal: escaped control characters, ages, aligned tables with notes
under their rows, and what a finding's action does beyond its bundle."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from shimctl.models.findings import Finding

# Error text may span lines (a shim's output); other control characters are escaped.
MULTILINE = "\n\t"


def printable(text: str, *, keep: str = "") -> str:
    """`text` with control characters shown as escapes (\\n, \\x1b, ...), except those in
    `keep`: nothing a shim or a directory name holds can drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in keep else repr(c)[1:-1] for c in text)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def short_runtime(path: str | None) -> str:
    return path.rsplit("/", 1)[-1] if path else "-"


def table(
    out: TextIO,
    headers: list[str],
    rows: list[list[str]],
    *,
    color: bool,
    notes: Sequence[Sequence[str]] = (),
) -> None:
    """Aligned columns, bold headers and dim notes on a colour terminal. `notes[i]`: lines
    shown under `rows[i]`, indented, one each."""
    # Cells come from directory names and shim output: never let them carry terminal control
    # sequences, nor (on a terminal) rich markup.
    rows = [
        row if "".join(row).isprintable() else [printable(cell) for cell in row] for row in rows
    ]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()

    lines = [(line(headers), "bold")]
    for i, row in enumerate(rows):
        lines.append((line(row), ""))
        lines += [(NOTE_INDENT + printable(n), "dim") for n in (notes[i] if i < len(notes) else ())]
    if not color:
        out.write("".join(text + "\n" for text, _ in lines))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=True)
    for text, style in lines:
        console.print(Text(text, style=style))


NOTE_INDENT = "    "
# Outcomes after which an action's consequence did not (or may not) happen.
_NOT_DONE = frozenset({"failed", "skipped", "removed by containerd"})


def finding_lines(f: Finding) -> list[str]:
    """The lines text output shows under a finding's row: what its action does beyond the
    bundle (processes it kills, a shared shim it spares), then its notes."""
    said = [f"consequence: {c}" for c in _consequences(f)]
    return said + [f"note: {n}" for n in f.notes]


def _consequences(f: Finding) -> list[str]:
    if f.action in ("keep", "report") or f.outcome in _NOT_DONE:
        return []
    pids = ",".join(map(str, f.task_pids))
    said = []
    if f.action == "delete-dead" and f.task_pids:
        # The shim is gone but runc's container is not: `runc delete --force` kills it.
        said.append(
            f"container process {pids} still runs without its shim: the runtime's delete verb "
            "kills it (as containerd does for a dead shim when it restarts)"
        )
    elif f.action == "runc-delete" and f.task_pids:
        said.append(f"`runc delete --force` kills container process {pids}, left without a bundle")
    elif f.action == "stop-task":
        said.append(f"kills the task's processes ({pids or 'all'}) with SIGKILL through its shim")
    elif f.action == "kill":
        said.append(
            f"kills shim {f.shim_pid or '-'}, then runs the runtime's delete verb for each bundle "
            "it served: their container processes are killed"
        )
    spared = not f.shutdown_shim or f.sandbox is not None
    told = any("shared shim" in n for n in f.notes)  # apply says so once it acted
    if f.action in ("delete-task", "stop-task") and spared and not told:
        said.append("shared shim: not shut down (other bundles of its pod use it)")
    return said
