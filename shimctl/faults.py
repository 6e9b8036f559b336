"""Crash points for fault-injection tests.

`SHIMCTL_CRASH_AT=<name>` makes shimctl SIGKILL itself when it reaches the checkpoint of that
name, so tests can interrupt start, delete and gc at an exact step instead of by timing luck.
Unset (always, in normal use) it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "SHIMCTL_CRASH_AT"

# Every checkpoint, in the order a run reaches them; tests iterate over these.
START_STEPS = (
    "start:bundle-created",
    "start:shim-started",
    "start:binary-path-written",
    "start:connected",
)
DELETE_STEPS = (
    "delete:task-deleted",
    "delete:shim-stopped",
    "delete:verb-run",  # the shim was gone: its runtime's delete verb ran instead
    "bundle:renamed",  # inside the atomic bundle delete (also reached by gc and a failed start)
)
GC_STEPS = (
    "gc:planned",
    "gc:task-deleted",
    "gc:shim-stopped",
    "gc:verb-run",
    "gc:action-done",
)


def checkpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
