"""A progress bar on stderr for long load/gc runs (rich, imported only when one is shown)."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

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
