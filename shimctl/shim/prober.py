"""Probe many shims at once from one thread.

Each shim gets one connection on which Connect, Pids and State are sent together (ttrpc
multiplexes streams, and a shim answers them in any order), and one deadline for the three.
A selector waits on every connection at once, so K silent shims cost one timeout together and
N quick ones cost little more than their bytes: no thread per shim, no round trip per call.

Failures are the synchronous client's (shim/ttrpc.py) error classes with its messages, so a
caller judges a probe exactly as it judges TtrpcClient calls:

- refused, missing socket, bad address  -> Unavailable / InvalidArgument (every call)
- the connection ends                   -> ShimClosed (every call not yet answered)
- the deadline passes                   -> DeadlineExceeded (every call not yet answered)
- bytes that are not a ttrpc answer     -> ProtocolError (every call not yet answered)
- a non-OK status, an oversized answer  -> that call's error; the others go on
"""

from __future__ import annotations

import resource
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

from shimctl import errors
from shimctl.shim import frames, ttrpc
from shimctl.shim.address import parse_address
from shimctl.shim.bootstrap import service_name

# The calls of one probe, in the order a caller judges them.
CALLS = ("Connect", "Pids", "State")

_FD_RESERVE = 128  # descriptors left for everything else the run opens


class Target(NamedTuple):
    address: str
    namespace: str
    id: str
    api_version: int = 2


Answer = bytes | errors.ShimctlError
"""A call's response payload, or the error it ended with."""


class _Probe:
    """One shim being probed: its connection, what is left to send, what came back."""

    __slots__ = (
        "answers",
        "deadline",
        "discard",
        "discard_length",
        "discard_stream",
        "events",
        "inbuf",
        "index",
        "out",
        "pause",
        "pending",
        "retry_at",
        "sock",
        "target",
    )

    def __init__(self, index: int, target: Target, deadline: float, answers: list[Answer | None]):
        self.index, self.target, self.deadline, self.answers = index, target, deadline, answers
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        self.pause = ttrpc.CONNECT_FIRST_PAUSE
        self.out = b""
        self.events = 0  # what the epoll set watches for on its socket
        self.inbuf = bytearray()
        self.pending: dict[int, int] = {}  # stream id -> call index
        self.discard = 0  # bytes left of an oversized frame being skipped
        self.discard_stream = 0
        self.discard_length = 0

    def what(self, call: int) -> str:
        service = service_name(self.target.api_version)
        return ttrpc.call_what(service, CALLS[call], self.target.address)


def max_open() -> int:
    """How many probes may be in flight: each holds a socket, and its caller may hold one
    more descriptor (a log fifo). Raises the soft descriptor limit to the hard one first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(8, min(4096, (soft - _FD_RESERVE) // 2))


def probe_all(
    targets: Sequence[Target],
    *,
    timeout: float,
    limit: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[list[Answer]]:
    """Connect, Pids and State on every target; one answer list (in CALLS order) per target.
    At most `limit` connections are open at once; `on_done(index)` runs as each one ends."""
    prober = Prober(timeout=timeout, limit=limit, on_done=on_done)
    for target in targets:
        prober.submit(target)
    return prober.finish()


class Prober:
    """Probes submitted one by one (the caller may still be reading the next bundles while the
    first shims answer); `poll` does whatever I/O is ready, `finish` waits for the rest.

    Per shim this costs socket (non-blocking from the start), connect, one send of the three
    pre-built requests, usually one recv and a close: an epoll set is watched directly, and
    a closed socket leaves it by itself (epoll(7)), so no unregister call."""

    def __init__(
        self,
        *,
        timeout: float,
        limit: int | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self.limit = limit or max_open()
        self.on_done = on_done
        self.results: list[list[Answer] | None] = []
        self._epoll = select.epoll()
        self._by_fd: dict[int, _Probe] = {}
        self._live: dict[int, _Probe] = {}
        self._retrying: list[_Probe] = []
        self._buf = bytearray(_RECV_SIZE)
        self._view = memoryview(self._buf)

    def submit(self, target: Target) -> int:
        """Start probing `target` (after waiting for a free slot); returns its index."""
        while len(self._live) >= self.limit:
            self.poll(None)
        index = len(self.results)
        self.results.append(None)
        p = _Probe(index, target, time.monotonic() + self.timeout, [None] * len(CALLS))
        self._live[index] = p
        self._begin(p)
        return index

    def finish(self) -> list[list[Answer]]:
        """Wait until every probe has ended; the answers, in submission order."""
        while self._live:
            self.poll(None)
        self._epoll.close()
        return [r if r is not None else [] for r in self.results]

    def poll(self, wait: float | None = 0.0) -> None:
        """Handle ready sockets, due retries and passed deadlines. `wait`: how long to block
        for I/O at most (None: until the next deadline or retry)."""
        now = time.monotonic()
        if self._retrying:
            for p in [p for p in self._retrying if p.retry_at <= now]:
                self._retrying.remove(p)
                if p.deadline <= now:
                    self._fail_dial(p)
                else:
                    self._begin(p)
        # Every probe has the same timeout and _live keeps submission order, so it is ordered
        # by deadline: only its head needs looking at (poll runs once per submitted bundle).
        expired = []
        for p in self._live.values():
            if p.deadline > now:
                break
            if p.sock is not None:  # a retrying dial ends by its own deadline, above
                expired.append(p)
        for p in expired:
            self._fail_pending(p, ttrpc.deadline_error)
        if not self._live:
            return
        if wait is None:
            wake = next(iter(self._live.values())).deadline
            for p in self._retrying:
                wake = min(wake, p.retry_at)
            wait = max(0.0, wake - time.monotonic())
        if not self._by_fd:
            time.sleep(wait)
            return
        by_fd = self._by_fd
        for fd, mask in self._epoll.poll(wait):
            ready = by_fd.get(fd)
            if ready is None or ready.sock is None:
                continue
            if mask & _WRITABLE and ready.out:
                self._write(ready)
            if ready.sock is not None and mask & _READABLE:
                self._read(ready)

    # -- one probe -----------------------------------------------------------------------

    def _finish(self, p: _Probe) -> None:
        if p.sock is not None:
            # Closing drops it from the epoll set: it is the socket's only descriptor.
            self._by_fd.pop(p.sock.fileno(), None)
            p.sock.close()
            p.sock = None
        self._live.pop(p.index, None)
        answers = p.answers
        if None in answers:
            answers = [
                a if a is not None else errors.Unknown(f"{p.what(i)}: no answer")
                for i, a in enumerate(answers)
            ]
        self.results[p.index] = cast("list[Answer]", answers)
        if self.on_done is not None:
            self.on_done(p.index)

    def _fail_pending(self, p: _Probe, make: Callable[[str], errors.ShimctlError]) -> None:
        for call in p.pending.values():
            p.answers[call] = make(p.what(call))
        p.pending.clear()
        self._finish(p)

    def _fail_transport(self, p: _Probe, err: OSError) -> None:
        self._fail_pending(p, lambda what: ttrpc.transport_error(what, err))

    def _fail_dial(self, p: _Probe) -> None:
        """A probe whose dial kept hitting a full accept queue until its deadline."""
        timed_out = errors.DeadlineExceeded(
            f"connect {p.target.address}: timed out (the shim's accept queue stayed full)"
        )
        p.answers = [timed_out] * len(CALLS)
        self._finish(p)

    def _begin(self, p: _Probe) -> None:
        """Dial; on success queue the three requests. Ends `p` on a hard failure."""
        now = time.monotonic()
        try:
            target = parse_address(p.target.address)
        except errors.ShimctlError as err:
            p.answers = [err] * len(CALLS)
            self._finish(p)
            return
        sock = None
        try:
            sock = socket.socket(socket.AF_UNIX, _STREAM_FLAGS)
            sock.connect(target)
        except BlockingIOError:
            # EAGAIN: the listener's accept queue is full (a busy or hung server). Retry
            # until the deadline, as the synchronous client does: it reads as a deadline.
            assert sock is not None
            sock.close()
            p.retry_at = now + p.pause
            p.pause = min(p.pause * 2, ttrpc.CONNECT_MAX_PAUSE)
            self._retrying.append(p)
            return
        except OSError as err:
            if sock is not None:
                sock.close()
            p.answers = [ttrpc.dial_error(p.target.address, err)] * len(CALLS)
            self._finish(p)
            return
        p.sock = sock
        p.out = _requests(p.target, max(1, int((p.deadline - now) * 1e9)))
        p.pending = {1: 0, 3: 1, 5: 2}  # stream id -> call index, as _requests numbers them
        fd = sock.fileno()
        self._by_fd[fd] = p
        p.events = select.EPOLLIN
        self._epoll.register(fd, select.EPOLLIN)
        # Small requests: the socket buffer takes them at once, almost always.
        self._write(p)

    def _write(self, p: _Probe) -> None:
        assert p.sock is not None
        try:
            sent = p.sock.send(p.out)
        except BlockingIOError:
            sent = 0
        except OSError as err:
            self._fail_transport(p, err)
            return
        p.out = p.out[sent:]
        events = select.EPOLLIN | (select.EPOLLOUT if p.out else 0)
        if events != p.events:
            p.events = events
            self._epoll.modify(p.sock.fileno(), events)

    def _read(self, p: _Probe) -> None:
        assert p.sock is not None
        try:
            n = p.sock.recv_into(self._buf)
        except BlockingIOError:
            return
        except OSError as err:
            self._fail_transport(p, err)
            return
        if not n:
            if p.discard:
                why = "connection ended in an oversized frame"
            elif p.inbuf:
                why = f"connection ended after {len(p.inbuf)} bytes of a frame"
            else:
                why = "connection ended"
            self._fail_pending(p, lambda w: errors.ShimClosed(f"{w}: ttrpc: closed ({why})"))
            return
        p.inbuf += self._view[:n]
        try:
            _parse(p)
        except errors.ProtocolError as err:
            message = err.message
            self._fail_pending(p, lambda w: errors.ProtocolError(f"{w}: {message}"))
            return
        if not p.pending:
            self._finish(p)


_RECV_SIZE = 64 * 1024
# A hang-up or an error shows on both sides, as selectors reports it: a send still queued
# fails first, then the read.
_READABLE = select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR
_WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_STREAM_FLAGS = socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
_REQUEST_HEADER = struct.Struct(">IIBB")


def _requests(target: Target, timeout_nano: int) -> bytes:
    """The three request frames of a probe, on streams 1, 3 and 5: the three envelopes share
    everything but the method (frames.request_parts), and the three payloads are the same
    bytes (only the task id is set)."""
    service = service_name(target.api_version)
    body = frames.id_payload(target.id)
    middle = frames.encode_request("", "", body, timeout_nano=timeout_nano)
    wire = bytearray()
    for call, method in enumerate(CALLS):
        prefix, suffix = frames.request_parts(service, method, target.namespace)
        length = len(prefix) + len(middle) + len(suffix)
        if length > frames.MAX_MESSAGE:
            raise frames.too_large(length)
        wire += _REQUEST_HEADER.pack(length, 1 + 2 * call, frames.MSG_TYPE_REQUEST, 0)
        wire += prefix
        wire += middle
        wire += suffix
    return bytes(wire)


def _parse(p: _Probe) -> None:
    """Take every whole response frame out of p.inbuf. ProtocolError breaks the connection."""
    buf = p.inbuf
    pos = 0
    try:
        while True:
            if p.discard:
                n = min(p.discard, len(buf) - pos)
                pos += n
                p.discard -= n
                if p.discard:
                    return
                skipped = p.pending.pop(p.discard_stream)
                p.answers[skipped] = frames.too_large(p.discard_length)
                continue
            if len(buf) - pos < frames.HEADER_SIZE:
                return
            header = frames.FrameHeader._make(_REQUEST_HEADER.unpack_from(buf, pos))
            frames.check_response_header(header, p.pending)
            call = p.pending[header.stream_id]
            pos += frames.HEADER_SIZE
            if header.length > frames.MAX_MESSAGE:
                # Read and thrown away as it comes; memory stays bounded.
                p.discard, p.discard_stream, p.discard_length = (
                    header.length,
                    header.stream_id,
                    header.length,
                )
                continue
            end = pos + header.length
            if len(buf) < end:
                pos -= frames.HEADER_SIZE  # the header is read again with the rest
                return
            data = bytes(buf[pos:end])
            pos = end
            answer: Answer
            try:
                answer = frames.parse_response(data)
            except errors.ProtocolError:
                raise  # still pending: it fails with the connection
            except errors.ShimctlError as err:
                answer = err  # a status: this call failed, the connection is fine
            del p.pending[header.stream_id]
            p.answers[call] = answer
    finally:
        del buf[:pos]
