"""Kill points: containerd SIGKILLed (by its verified PID) the moment a file appears.

The client call runs in the background; the file is polled every millisecond, which on the
paths used here (runc's ``state.json``, the bundle's ``init.pid``: both written by ``runc
create`` before the shim answers containerd) lands long before containerd's next step.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.containerd import Containerd

POLL = 0.001


def kill_at(
    containerd: Containerd,
    appeared: Callable[[], Path | None],
    call: Callable[[], Any],
    timeout: float = 30,
) -> tuple[Path, BaseException | None]:
    """Run ``call`` in a thread; SIGKILL containerd as soon as ``appeared()`` names a file.
    Returns that file and what ``call`` raised (None if it returned)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    found = None
    while found is None:
        found = appeared()
        if found is not None:
            containerd.kill()
            break
        if not thread.is_alive() or time.monotonic() >= deadline:
            containerd.kill()
            thread.join(timeout)
            raise AssertionError(f"the kill point never came (call ended: {outcome})")
        time.sleep(POLL)
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError("the client call did not return after containerd was killed")
    return found, outcome[0] if outcome else None


def first_file(pattern_dir: Path, glob: str) -> Callable[[], Path | None]:
    """A poll for the first file matching ``glob`` under ``pattern_dir``."""

    def poll() -> Path | None:
        return next(iter(pattern_dir.glob(glob)), None)

    return poll
