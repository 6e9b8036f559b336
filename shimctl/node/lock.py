"""One flock per state dir, so two shimctl runs never change the same bundles at once.

flock is released by the kernel when the holder dies, so a killed shimctl never leaves the lock
held. The lock file is a hidden plain file in STATE, which containerd's loader skips.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shimctl.errors import DeadlineExceeded, FailedPrecondition
from shimctl.node import fs

LOCK_NAME = ".shimctl.node.lock"


@contextmanager
def state_lock(task_state: Path, *, timeout: float = 30.0) -> Iterator[None]:
    try:
        fs.makedirs_mode(task_state, 0o711)
        fd = os.open(task_state / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise FailedPrecondition(
            f"cannot open lock file in {task_state}: {err.strerror}",
            hint="run shimctl as root, and check that the state dir is writable",
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"another shimctl holds {task_state / LOCK_NAME} for more than {timeout:g}s",
                    hint="wait for it to finish and run again",
                )
            time.sleep(0.02)
        yield
    finally:
        os.close(fd)
