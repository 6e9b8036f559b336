"""A small synchronous ttrpc client (unary calls only), on stdlib sockets.

Wire format (spec/ttrpc.md): every message is a 10-byte big-endian header
(data length u32, stream id u32, type u8, flags u8) followed by the data. The client sends
a `ttrpc.Request` envelope as a type-1 frame on odd, increasing stream ids and reads back a
type-2 frame carrying a `ttrpc.Response` envelope.

The frame codec and the response reader are plain functions in shim/frames.py (fuzzed
without a socket); addresses are read by shim/address.py. Every failure surfaces as a
`shimctl.errors` class:

- the connection ends (EOF, ECONNRESET, EPIPE)      -> ShimClosed
- the call's own deadline passes                    -> DeadlineExceeded
- bytes that are not a valid ttrpc answer           -> ProtocolError
- a non-OK status                                   -> errors.from_grpc_code(code, message)
- a frame over MAX_MESSAGE                          -> code 8 (RESOURCE_EXHAUSTED), Unknown

After DeadlineExceeded, ShimClosed, ProtocolError or any other transport error, the
connection is closed and the client refuses further calls (ShimClosed).
"""

from __future__ import annotations

import errno
import math
import socket
import threading
import time
from types import TracebackType
from typing import Self

from shimctl import errors
from shimctl.shim.address import parse_address
from shimctl.shim.frames import (
    MAX_MESSAGE,
    MAX_STREAM_ID,
    MSG_TYPE_REQUEST,
    encode_frame,
    encode_request,
    read_response,
    too_large,
)

# -- errors a client raises (shared with the pipelining prober, shim/prober.py) ------------

# Pauses between connect attempts while a listener's accept queue is full (EAGAIN).
CONNECT_FIRST_PAUSE = 0.005
CONNECT_MAX_PAUSE = 0.1

_CLOSED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def call_what(service: str, method: str, address: str) -> str:
    """How errors of one call name it."""
    return f"ttrpc {service}/{method} on {address}"


def deadline_error(what: str) -> errors.DeadlineExceeded:
    return errors.DeadlineExceeded(f"{what}: context deadline exceeded")


def dial_error(address: str, err: OSError) -> errors.Unavailable:
    """A socket that could not be made or connected (other than a full accept queue)."""
    gone = err.errno in (errno.ENOENT, errno.ECONNREFUSED)
    return errors.Unavailable(
        f"connect {address}: {err.strerror or err}",
        hint="is the shim running?" if gone else None,
    )


def transport_error(what: str, err: OSError) -> errors.ShimctlError:
    """A send or receive that failed: the peer went away (ShimClosed), or something else."""
    if isinstance(err, _CLOSED):
        return errors.ShimClosed(f"{what}: ttrpc: closed ({err.strerror})")
    return errors.Unavailable(f"{what}: {err.strerror or err}")


# -- client --------------------------------------------------------------------------------


MAX_TIMEOUT = 365 * 86400.0
"""Longer timeouts are cut to this (keeps socket, lock and timeout_nano values in range)."""


def _check_timeout(timeout: float) -> float:
    if math.isnan(timeout):
        raise errors.InvalidArgument("timeout is NaN")
    return min(timeout, MAX_TIMEOUT)


class TtrpcClient:
    """One connection to a ttrpc server; calls are serialised (one in flight at a time)."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self._sock: socket.socket | None = sock
        self.address = address
        self._next_id = 1
        self._lock = threading.Lock()
        self._why_closed = "client closed"

    @classmethod
    def connect(cls, address: str, *, timeout: float) -> TtrpcClient:
        target = parse_address(address)
        timeout = _check_timeout(timeout)
        if timeout <= 0:
            raise errors.DeadlineExceeded(f"connect {address}: no time left")
        deadline = time.monotonic() + timeout
        pause = CONNECT_FIRST_PAUSE
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            except OSError as err:
                raise dial_error(address, err) from None
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                sock.connect(target)
                return cls(sock, address)
            except BlockingIOError:
                # EAGAIN: the listener's accept queue is full (a busy or hung server).
                # Go fails at once here; we keep trying until our deadline instead, so a
                # live-but-stuck shim reads as DeadlineExceeded, never as Unavailable.
                sock.close()
                time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
                pause = min(pause * 2, CONNECT_MAX_PAUSE)
            except TimeoutError:
                sock.close()
                raise errors.DeadlineExceeded(
                    f"connect {address}: timed out after {timeout:g}s"
                ) from None
            except OSError as err:
                sock.close()
                raise dial_error(address, err) from None

    @property
    def closed(self) -> bool:
        return self._sock is None

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _break(self, why: str) -> None:
        self._why_closed = why
        self.close()

    def call(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float,
        namespace: str,
    ) -> bytes:
        """One unary call; returns the response payload. The whole call (including
        waiting for a busy client) must finish within `timeout` seconds."""
        timeout = _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        what = call_what(service, method, self.address)
        if timeout <= 0 or not self._lock.acquire(timeout=timeout):
            raise deadline_error(what)
        try:
            return self._call_locked(service, method, payload, deadline, namespace, what)
        finally:
            self._lock.release()

    def _call_locked(
        self,
        service: str,
        method: str,
        payload: bytes,
        deadline: float,
        namespace: str,
        what: str,
    ) -> bytes:
        sock = self._sock
        if sock is None:
            raise errors.ShimClosed(f"{what}: ttrpc: closed ({self._why_closed})")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise deadline_error(what)
        data = encode_request(
            service,
            method,
            payload,
            timeout_nano=max(1, int(remaining * 1e9)),
            namespace=namespace,
        )
        if len(data) > MAX_MESSAGE:
            raise too_large(len(data))  # nothing was sent: the client stays usable
        stream_id = self._next_id
        if stream_id > MAX_STREAM_ID:
            self._break("stream ids exhausted")
            raise errors.ShimClosed(f"{what}: ttrpc: stream ids exhausted, reconnect")
        self._next_id += 2
        frame = encode_frame(stream_id, MSG_TYPE_REQUEST, 0, data)

        def recv(n: int) -> bytes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            return sock.recv(n)

        clean = False
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            sock.sendall(frame)
            result = read_response(recv, stream_id)
            clean = True
            return result
        except TimeoutError:
            self._break("a call timed out")
            raise deadline_error(what) from None
        except errors.ShimClosed as err:
            self._break("connection ended")
            raise errors.ShimClosed(f"{what}: {err.message}") from None
        except errors.ProtocolError as err:
            self._break("protocol error")
            raise errors.ProtocolError(f"{what}: {err.message}") from None
        except errors.ShimctlError:
            # A status from the server, or an oversized response that was skipped whole:
            # the stream is still in step, so the connection stays usable.
            clean = True
            raise
        except OSError as err:
            ended = isinstance(err, _CLOSED)
            self._break("connection ended" if ended else f"socket error: {err.strerror or err}")
            raise transport_error(what, err) from None
        finally:
            if not clean and self._sock is not None:
                # KeyboardInterrupt or similar mid-call: the stream is out of step.
                self._break("a call was interrupted")
