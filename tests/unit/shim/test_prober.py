"""The pipelining prober (shim/prober.py) on its own: answers matched by stream id in any order,
per-call statuses, transport failures for every pending call, one deadline, and the bound on
open connections. The real shim is probed through list/gc elsewhere (test_gc_real.py,
test_safety_shims.py); these servers show what it cannot be made to: answers out of order,
a cap on connections open at once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shimctl import errors
from shimctl.shim import prober, task
from shimctl.shim.proto import task_pb2, ttrpc_pb2
from tests.support.fakeshim import HEADER, FakeShim, _frame, _ok, _recv_exact


class ReversingShim:
    """Reads the three requests of a probe, then answers them last first: Connect with pid
    `shim_pid`, Pids with `task_pid` (or NotFound), State running. Counts connections open at
    once."""

    open_now = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, path: Path, shim_pid: int, task_pid: int = 0) -> None:
        self.path = path
        self.shim_pid, self.task_pid = shim_pid, task_pid
        self.requests: list[ttrpc_pb2.Request] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        with conn:
            frames = []
            for _ in range(3):
                header = _recv_exact(conn, HEADER.size)
                assert header is not None
                length, sid, _, _ = HEADER.unpack(header)
                data = _recv_exact(conn, length)
                assert data is not None
                req = ttrpc_pb2.Request()
                req.ParseFromString(data)
                self.requests.append(req)
                frames.append((sid, req.method))
            for sid, method in reversed(frames):
                conn.sendall(self._answer(sid, method))
            conn.recv(1)  # until the prober hangs up

    def _answer(self, sid: int, method: str) -> bytes:
        if method == "Connect":
            reply = task_pb2.ConnectResponse(shim_pid=self.shim_pid, version="2")
            return _ok(sid, reply.SerializeToString())
        if not self.task_pid:
            resp = ttrpc_pb2.Response()
            resp.status.code, resp.status.message = 5, "container not created: not found"
            return _frame(sid, 2, resp.SerializeToString())
        if method == "Pids":
            pids = task_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=self.task_pid)])
            return _ok(sid, pids.SerializeToString())
        state = task_pb2.StateResponse(id="t", pid=self.task_pid, status=task_pb2.RUNNING)
        return _ok(sid, state.SerializeToString())

    def close(self) -> None:
        self.srv.close()
        self.thread.join(timeout=5)


@pytest.fixture
def sockdir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "s"
    d.mkdir()
    yield d


def test_answers_out_of_order_are_matched_by_stream(sockdir: Path) -> None:
    shims = [
        ReversingShim(sockdir / "a.sock", shim_pid=101, task_pid=7),
        ReversingShim(sockdir / "b.sock", shim_pid=102),
    ]
    try:
        targets = [
            prober.Target(f"unix://{sockdir / 'a.sock'}", "ns1", "a"),
            prober.Target(f"unix://{sockdir / 'b.sock'}", "ns1", "b", api_version=3),
        ]
        (a_connect, a_pids, a_state), (b_connect, b_pids, b_state) = prober.probe_all(
            targets, timeout=5
        )
    finally:
        for s in shims:
            s.close()
    assert isinstance(a_connect, bytes) and task.decode_connect(a_connect).shim_pid == 101
    assert isinstance(a_pids, bytes) and task.decode_pids(a_pids) == [7]
    assert isinstance(a_state, bytes) and task.decode_state(a_state).status == "running"
    assert isinstance(b_connect, bytes) and task.decode_connect(b_connect).shim_pid == 102
    # A status fails only its own call.
    assert isinstance(b_pids, errors.NotFound) and isinstance(b_state, errors.NotFound)
    # What went on the wire: the three calls, the namespace header, the right service.
    methods = [(r.service, r.method) for r in shims[1].requests]
    assert sorted(methods) == sorted(
        ("containerd.task.v3.Task", m) for m in ("Connect", "Pids", "State")
    )
    for req in shims[0].requests:
        assert req.timeout_nano > 0
        assert [(m.key, m.value) for m in req.metadata] == [("containerd-namespace-ttrpc", "ns1")]


def test_at_most_limit_connections_are_open(sockdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted on the prober's side: sockets it created and has not closed yet."""
    counts = {"open": 0, "peak": 0}

    class Counting(socket.socket):
        def __init__(self, *args: object, fileno: int | None = None, **kw: object) -> None:
            super().__init__(*args, fileno=fileno, **kw)  # type: ignore[arg-type,misc]
            self.counted = fileno is None  # made by a client, not by accept()
            if self.counted:
                counts["open"] += 1
                counts["peak"] = max(counts["peak"], counts["open"])

        def close(self) -> None:
            if self.counted and self.fileno() >= 0:
                counts["open"] -= 1
            super().close()

    shims = [ReversingShim(sockdir / f"{i}.sock", shim_pid=200 + i) for i in range(5)]
    try:
        targets = [prober.Target(f"unix://{sockdir / f'{i}.sock'}", "ns", str(i)) for i in range(5)]
        done: list[int] = []
        monkeypatch.setattr(socket, "socket", Counting)
        results = prober.probe_all(targets, timeout=5, limit=2, on_done=done.append)
    finally:
        monkeypatch.undo()
        for s in shims:
            s.close()
    assert counts["peak"] == 2 and counts["open"] == 0
    assert sorted(done) == [0, 1, 2, 3, 4]
    for i, (connect, _, _) in enumerate(results):
        assert isinstance(connect, bytes) and task.decode_connect(connect).shim_pid == 200 + i


def test_failures_reach_every_pending_call(sockdir: Path) -> None:
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    refusing.bind(str(sockdir / "refusing.sock"))  # bound, never listening
    try:
        with (
            FakeShim(str(sockdir / "silent.sock"), "silent"),
            FakeShim(str(sockdir / "garbage.sock"), "garbage"),
            FakeShim(str(sockdir / "close.sock"), "close-mid"),
        ):
            targets = [
                prober.Target(f"unix://{sockdir / name}", "ns", "x")
                for name in ("missing.sock", "refusing.sock", "silent.sock", "garbage.sock")
            ]
            targets.append(prober.Target(f"unix://{sockdir / 'close.sock'}", "ns", "x"))
            targets.append(prober.Target("unix://relative/path", "ns", "x"))
            missing, refused, silent, garbage, closed, bad = prober.probe_all(targets, timeout=1.0)
    finally:
        refusing.close()
    assert all(isinstance(a, errors.Unavailable) for a in missing + refused)
    assert missing[0].hint == "is the shim running?"  # type: ignore[union-attr]
    assert all(isinstance(a, errors.DeadlineExceeded) for a in silent)
    assert all("context deadline exceeded" in str(a) for a in silent)
    assert all(isinstance(a, errors.ProtocolError) for a in garbage)
    assert all(isinstance(a, errors.ShimClosed) for a in closed)
    assert "Connect" in str(closed[0]) and "Pids" in str(closed[1])
    assert all(isinstance(a, errors.InvalidArgument) for a in bad)
