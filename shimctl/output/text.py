"""Text that reaches a terminal: escaped control characters, ages, aligned tables."""

from __future__ import annotations

from typing import TextIO

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


def table(out: TextIO, headers: list[str], rows: list[list[str]], *, color: bool) -> None:
    """A table: rich on a colour terminal, plain aligned columns otherwise."""
    # Cells come from directory names and shim output: never let them carry terminal control
    # sequences, nor (on a terminal) rich markup.
    rows = [
        row if "".join(row).isprintable() else [printable(cell) for cell in row] for row in rows
    ]
    if color:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        t = Table(*headers, box=None, header_style="bold")
        for row in rows:
            t.add_row(*(Text(cell) for cell in row))
        Console(file=out).print(t)
        return
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        out.write(line.rstrip() + "\n")
