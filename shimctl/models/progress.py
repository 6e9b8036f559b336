"""Progress reporting from the core without knowing the terminal: a callback
`progress(phase, done, total)` that render.py turns into a bar (or nothing)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

ProgressFn = Callable[[str, int, int], None]


def counted(
    fn: Callable[[T], R], phase: str, total: int, progress: ProgressFn | None
) -> Callable[[T], R]:
    """`fn`, reporting `progress(phase, done, total)` after each call (from any thread)."""
    if progress is None:
        return fn
    lock = threading.Lock()
    done = 0
    report = progress
    report(phase, 0, total)

    def wrapped(item: T) -> R:
        nonlocal done
        try:
            return fn(item)
        finally:
            with lock:
                done += 1
                report(phase, done, total)

    return wrapped
