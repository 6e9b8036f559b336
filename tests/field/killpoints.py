"""Kill points: containerd SIGKILLed (by its verified PID) the moment a file appears.

The client call runs in the background; the file is polled every millisecond, which on the
paths used here (runc's ``state.json``, the bundle's ``init.pid``: both written by ``runc
create`` before the shim answers containerd) lands long before containerd's next step.
"""

from __future__ import annotations

import os
import shlex
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

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
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
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


@dataclass
class RuncHold:
    """A runc wrapper (the runtime's ``BinaryName``) that, once armed, holds the shim's
    ``runc create`` after runc returned — ``state.json`` and ``init.pid`` are written, the
    container's ``runc init`` waits — until the test has killed containerd. Every other call
    (and every call when not armed) goes straight to runc.

    It makes the kill point exact: containerd dies while the shim's Create is in flight
    after ``runc create``, as a SIGKILL at ``state.json``/``init.pid`` lands when it wins the
    race; the loser (Create answered first) is the ``created`` task of another scenario."""

    dir: Path
    runc: str

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        q = {n: shlex.quote(str(self.dir / n)) for n in ("armed", "held", "release")}
        self.path.write_text(
            f"""#!/bin/sh
# Test runc wrapper: when armed, holds a successful `runc create` until released.
{shlex.quote(self.runc)} "$@"
rc=$?
create=
for arg in "$@"; do [ "$arg" = create ] && create=1; done
if [ -n "$create" ] && [ $rc -eq 0 ] && rm {q["armed"]} 2>/dev/null; then
    : > {q["held"]}
    n=0
    while [ ! -e {q["release"]} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
fi
exit $rc
"""
        )
        self.path.chmod(0o755)

    @property
    def path(self) -> Path:
        return self.dir / "runc-hold"

    def arm(self) -> None:
        for name in ("held", "release"):
            (self.dir / name).unlink(missing_ok=True)
        (self.dir / "armed").touch()

    def held(self) -> Path | None:
        """The poll for :func:`kill_at`: the held marker once runc create is held."""
        marker = self.dir / "held"
        return marker if marker.exists() else None

    def release(self) -> None:
        (self.dir / "release").touch()


def runc_binary(path_prefix: tuple[str, ...]) -> str:
    """The runc a generation's shim runs (its dirs first on PATH)."""
    found = shutil.which("runc", path=os.pathsep.join([*path_prefix, os.environ["PATH"]]))
    if found is None:
        raise AssertionError("runc is not on PATH")
    return found


def parent(pid: int) -> psutil.Process:
    """The parent of ``pid`` (a container's: its shim)."""
    found = psutil.Process(pid).parent()
    if found is None:
        raise AssertionError(f"pid {pid} has no parent")
    return found
