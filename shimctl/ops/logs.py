"""`shimctl logs`: read a shim's log fifo the way containerd's manager copies it.

The manager opens `<bundle>/log` with O_RDWR|O_CREAT|O_NONBLOCK (mode 0700) and copies whatever
the shim writes to its own log. Holding the fifo read-write means the open never blocks and the
fifo never reports end-of-file while the shim restarts its writer. A shim writes only while some
reader has the fifo open (otherwise its writes fail with EPIPE and are dropped), so what was
logged before `logs` started is gone. Next to a live containerd, containerd reads the same fifo
and each line goes to one reader only.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator

from shimctl.settings import Settings
from shimctl.steps import access

READ_SIZE = 65536
POLL = 0.1
# In --follow mode, how often to check that the bundle still exists.
BUNDLE_CHECK = 1.0


def stream(settings: Settings, id: str, *, follow: bool, idle: float) -> Iterator[bytes]:
    """Yield what the shim of task `id` writes to its log. Without `follow`, stop once nothing
    arrived for `idle` seconds; with it, run until interrupted or until the bundle is gone."""
    bundle = access.bundle_of(settings, id)
    bundle.check_dir()
    fd = bundle.open_log_fifo()
    try:
        last_data = last_check = time.monotonic()
        while True:
            ready, _, _ = select.select([fd], [], [], POLL)
            now = time.monotonic()
            if ready:
                try:
                    data = os.read(fd, READ_SIZE)
                except (BlockingIOError, InterruptedError):
                    data = b""
                if data:
                    last_data = now
                    yield data
                    continue
            if not follow and now - last_data >= idle:
                return
            if follow and now - last_check >= BUNDLE_CHECK:
                last_check = now
                if not bundle.exists():
                    return
    finally:
        os.close(fd)
