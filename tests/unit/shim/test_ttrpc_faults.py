"""The ttrpc client against a fake server that misbehaves in ways the real shim cannot.

Every call must end by its own deadline with the right shimctl.errors class.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shimctl import errors
from shimctl.shim.frames import NAMESPACE_KEY
from shimctl.shim.task import TaskClient
from shimctl.shim.ttrpc import TtrpcClient
from tests.support.fakeshim import FakeShim

SERVICE = "containerd.task.v2.Task"
SLACK = 1.0  # seconds a call may overrun its deadline (scheduling noise)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short, so socket paths stay far below the 107-byte limit whatever pytest's tmp_path is.
    d = Path(tempfile.mkdtemp(prefix="shimctl-fake-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def fake(sockdir: Path) -> Iterator[Callable[[str], FakeShim]]:
    servers: list[FakeShim] = []

    def make(behaviour: str) -> FakeShim:
        srv = FakeShim(str(sockdir / f"{behaviour}-{len(servers)}.sock"), behaviour)
        servers.append(srv)
        return srv.__enter__()

    yield make
    for srv in servers:
        srv.close()


def timed(fn: Callable[[], object]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - the error is what is measured
        return time.monotonic() - start, err
    return time.monotonic() - start, None


def call(client: TtrpcClient, timeout: float, payload: bytes = b"\x0a\x02c1") -> bytes:
    return client.call(SERVICE, "Connect", payload, timeout=timeout, namespace="ns1")


# -- a well-behaved fake, to check what the client sends -------------------------------------


def test_ok_roundtrip_ids_deadline_and_metadata(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("ok")
    with TtrpcClient.connect(srv.address, timeout=2) as client:
        assert call(client, 3, b"one") == b"one"
        assert call(client, 3, b"two") == b"two"
        assert call(client, 3, b"") == b""
    assert [s.stream_id for s in srv.seen] == [1, 3, 5]
    for s in srv.seen:
        assert (s.msg_type, s.flags) == (1, 0)
        assert s.request.service == SERVICE and s.request.method == "Connect"
        assert 2_000_000_000 < s.request.timeout_nano <= 3_000_000_000
        assert [(kv.key, kv.value) for kv in s.request.metadata] == [(NAMESPACE_KEY, "ns1")]


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "expected", "max_time"),
    [
        ("silent", errors.DeadlineExceeded, 0.5 + SLACK),
        ("drip", errors.DeadlineExceeded, 0.5 + SLACK),
        ("huge-header", errors.DeadlineExceeded, 0.5 + SLACK),
        ("garbage", errors.ProtocolError, SLACK),
        ("wrong-stream", errors.ProtocolError, SLACK),
        ("wrong-type", errors.ProtocolError, SLACK),
        ("bad-envelope", errors.ProtocolError, SLACK),
        ("close-mid", errors.ShimClosed, SLACK),
        ("die", errors.ShimClosed, SLACK),
    ],
)
def test_fault_ends_by_deadline_and_breaks_client(
    fake: Callable[[str], FakeShim],
    behaviour: str,
    expected: type[errors.ShimctlError],
    max_time: float,
) -> None:
    srv = fake(behaviour)
    client = TtrpcClient.connect(srv.address, timeout=2)
    try:
        elapsed, err = timed(lambda: call(client, 0.5))
        assert type(err) is expected, repr(err)
        assert elapsed < max_time
        assert SERVICE in str(err) and srv.path in str(err)
        # The connection is out of step now: the client refuses further calls.
        assert client.closed
        elapsed, err = timed(lambda: call(client, 0.5))
        assert isinstance(err, errors.ShimClosed)
        assert elapsed < 0.1
    finally:
        client.close()


def test_huge_header_does_not_allocate(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("huge-header")
    with TtrpcClient.connect(srv.address, timeout=2) as client:
        tracemalloc.start()
        try:
            _, err = timed(lambda: call(client, 0.3))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert isinstance(err, errors.DeadlineExceeded)
    assert peak < 1024 * 1024


def test_oversized_response_is_discarded_and_client_survives(
    fake: Callable[[str], FakeShim],
) -> None:
    srv = fake("oversized")
    with TtrpcClient.connect(srv.address, timeout=2) as client:
        tracemalloc.start()
        try:
            _, err = timed(lambda: call(client, 10))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert type(err) is errors.Unknown, repr(err)
        assert getattr(err, "grpc_code", None) == 8
        assert "exceed maximum message size of 4194304" in str(err)
        assert peak < 1024 * 1024
        # The frame was read whole, so the stream is still in step.
        assert not client.closed
        assert call(client, 5, b"next") == b"next"
    assert [s.stream_id for s in srv.seen] == [1, 3]


def test_status_error_keeps_client_usable(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("status")
    with TtrpcClient.connect(srv.address, timeout=2) as client:
        for _ in range(2):
            with pytest.raises(errors.NotFound) as info:
                call(client, 2)
            assert str(info.value) == "container not created: not found"
        assert not client.closed


def test_oversized_request_is_refused_before_sending(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("ok")
    with TtrpcClient.connect(srv.address, timeout=2) as client:
        with pytest.raises(errors.Unknown) as info:
            call(client, 2, b"x" * (4 * 1024 * 1024))
        assert getattr(info.value, "grpc_code", None) == 8
        assert call(client, 2, b"small") == b"small"
    assert [s.stream_id for s in srv.seen] == [1]


def test_server_process_dies_mid_call(sockdir: Path) -> None:
    path = str(sockdir / "proc.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[2] / "support" / "fakeshim.py"),
            path,
            "silent",
        ],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        with TtrpcClient.connect("unix://" + path, timeout=2) as client:
            killer = threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL))
            killer.start()
            try:
                elapsed, err = timed(lambda: call(client, 10))
            finally:
                killer.cancel()
            assert isinstance(err, errors.ShimClosed), repr(err)
            assert elapsed < 0.5 + SLACK
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


# -- connect ---------------------------------------------------------------------------------


def test_connect_missing_socket_is_unavailable(sockdir: Path) -> None:
    address = f"unix://{sockdir}/nope.sock"
    with pytest.raises(errors.Unavailable) as info:
        TtrpcClient.connect(address, timeout=1)
    assert type(info.value) is errors.Unavailable
    assert address in str(info.value)


def test_connect_refused_is_unavailable(sockdir: Path) -> None:
    path = sockdir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))  # bound, never listening: a stale socket file
    try:
        with pytest.raises(errors.Unavailable) as info:
            TtrpcClient.connect(f"unix://{path}", timeout=1)
        assert str(path) in str(info.value)
    finally:
        s.close()


def test_connect_abstract_refused_is_unavailable() -> None:
    address = f"shimctl-test-no-such-abstract-{os.getpid()}-{time.monotonic_ns()}"
    with pytest.raises(errors.Unavailable) as info:
        TtrpcClient.connect(address, timeout=1)
    assert address in str(info.value)


def test_connect_abstract_roundtrip() -> None:
    name = f"shimctl-test-abstract-{os.getpid()}-{time.monotonic_ns()}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(b"\0" + name.encode())
    srv.listen(1)
    try:
        with TtrpcClient.connect(name, timeout=1) as client:
            conn, _ = srv.accept()
            conn.close()
            with pytest.raises(errors.ShimClosed):
                call(client, 1)
    finally:
        srv.close()


def test_connect_timeout_is_deadline_exceeded(sockdir: Path) -> None:
    path = str(sockdir / "full.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fillers: list[socket.socket] = []
    try:
        # Fill the accept queue so a further blocking connect() waits.
        for _ in range(64):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            fillers.append(c)
            try:
                c.connect(path)
            except BlockingIOError:
                break
        else:
            pytest.skip("could not fill the unix socket backlog")
        elapsed, err = timed(lambda: TtrpcClient.connect("unix://" + path, timeout=0.3))
        assert isinstance(err, errors.DeadlineExceeded), repr(err)
        assert elapsed < 0.3 + SLACK
    finally:
        for c in fillers:
            c.close()
        srv.close()


# -- the Task layer on faults ----------------------------------------------------------------


def test_task_wait_never_answered_ends_by_deadline(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("silent")
    with TaskClient.connect(srv.address, "ns1", timeout=2) as task:
        elapsed, err = timed(lambda: task.wait("c1", timeout=0.4))
    assert isinstance(err, errors.DeadlineExceeded)
    assert elapsed < 0.4 + SLACK


def test_task_shutdown_closed_counts_as_success(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("die")
    with TaskClient.connect(srv.address, "ns1", timeout=2) as task:
        task.shutdown("c1")
    assert srv.seen[0].request.method == "Shutdown"


def test_task_undecodable_reply_is_protocol_error(fake: Callable[[str], FakeShim]) -> None:
    srv = fake("ok")  # echoes the request payload back as the reply
    # PidsRequest{id} echoed back reads as PidsResponse{processes: [<id bytes>]};
    # "\n\x05" is a ProcessInfo field header promising 5 bytes that never come.
    with (
        TaskClient.connect(srv.address, "ns1", timeout=2) as task,
        pytest.raises(errors.ProtocolError),
    ):
        task.pids("\n\x05")
