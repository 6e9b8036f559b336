"""Drain a shim's log fifo while the shim starts: a shim whose fifo has no reader hangs,
and one whose pipe buffer fills blocks (shim-binary.md §4)."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

# Where what the shim logs goes, chunk by chunk (the CLI passes its console's writer).
LogSink = Callable[[bytes], None]


class LogDrain:
    """Read `fd` in a background thread until stop(); hand what arrives to `sink`, if any."""

    def __init__(self, fd: int, *, sink: LogSink | None) -> None:
        self._fd = fd
        self._sink = sink
        self._stop = threading.Event()
        # A pipe to wake the reader at once on stop(), rather than at its next poll.
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="shim-log", daemon=True)

    def __enter__(self) -> LogDrain:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd, self._wake_r], [], [])
                if self._wake_r in ready:
                    break  # stopped: what the shim wrote meanwhile is drained below
                data = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            if data and self._sink is not None:
                self._sink(data)
        if self._sink is not None:
            self._drain_rest(self._sink)

    def _drain_rest(self, sink: LogSink) -> None:
        """With --debug, pass on what the shim wrote before stop() (it would be lost otherwise)."""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # EAGAIN: nothing more buffered
                return
            if not data:
                return
            sink(data)

    def stop(self) -> None:
        """Stop reading and close the fifo; the shim then gets EPIPE on log writes, which it
        ignores (it catches SIGPIPE)."""
        if not self._stop.is_set():
            self._stop.set()
            os.write(self._wake_w, b"x")
            if self._thread.is_alive():
                self._thread.join()
            for fd in (self._fd, self._wake_r, self._wake_w):
                os.close(fd)
