"""records/tasks.py against fake containerds (a Python gRPC server, a raw socket): what the
real one answers (tests/real/test_owner_actions.py) and the faults it does not show on
demand: it hangs, refuses, answers garbage, or an error status. Every call ends within its
deadline with the documented result."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from shimctl.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable, Unknown
from shimctl.records.proto.api.services.containers.v1 import containers_pb2
from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
from shimctl.records.tasks import (
    CONTAINERS_GET,
    TASKS_DELETE,
    DeleteAnswer,
    delete_task,
    has_container,
)
from tests.support.fake_containerd_api import (
    SLACK,
    Handler,
    garbage,
    grpc_fake,
    raw_fake,
    sleeper,
    status,
)

TIMEOUT = 1.0


class Seen:
    """What the fake was asked: (namespace header, request) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, Any]] = []
        self.lock = threading.Lock()

    def add(self, ctx: Any, request: Any) -> None:
        with self.lock:
            self.calls.append(
                (dict(ctx.invocation_metadata()).get("containerd-namespace"), request)
            )


def _deleter(seen: Seen) -> Handler:
    def handler(raw: bytes, ctx: Any) -> bytes:
        request = tasks_pb2.DeleteTaskRequest.FromString(raw)
        seen.add(ctx, request)
        return tasks_pb2.DeleteResponse(
            id=request.container_id,
            pid=4242,
            exit_status=3,
            exited_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=250_000_000),
        ).SerializeToString()

    return handler


def _getter(seen: Seen, known: set[str], answer_id: str | None = None) -> Handler:
    def handler(raw: bytes, ctx: Any) -> bytes:
        request = containers_pb2.GetContainerRequest.FromString(raw)
        seen.add(ctx, request)
        if request.id not in known:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"container {request.id!r}: not found")
        record = containers_pb2.Container(id=answer_id or request.id)
        return containers_pb2.GetContainerResponse(container=record).SerializeToString()

    return handler


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.monotonic()
    try:
        result: Any = fn(*args)
    except Exception as err:  # noqa: BLE001 - the error is the result under test
        result = err
    return result, time.monotonic() - start


# -- Tasks.Delete ---------------------------------------------------------------------------


def test_delete_task_sends_the_namespace_and_returns_the_exit(tmp_path: Path) -> None:
    address, seen = tmp_path / "c.sock", Seen()
    with grpc_fake(address, {TASKS_DELETE: _deleter(seen)}):
        answer = delete_task(str(address), "k8s.io", "c1", TIMEOUT)
        # unix:// addresses as containerd's --address takes them
        again = delete_task(f"unix://{address}", "default", "c2", TIMEOUT)
    assert answer == DeleteAnswer(pid=4242, exit_status=3, exited_at=1_700_000_000.25)
    assert again.pid == 4242
    assert [(ns, r.container_id) for ns, r in seen.calls] == [("k8s.io", "c1"), ("default", "c2")]


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (status(grpc.StatusCode.NOT_FOUND, 'container "c1" in namespace: not found'), NotFound),
        (status(grpc.StatusCode.FAILED_PRECONDITION, "task must be stopped"), FailedPrecondition),
        (status(grpc.StatusCode.UNAVAILABLE, "going away"), Unavailable),
        (sleeper(5), DeadlineExceeded),
        (garbage, Unknown),  # an answer that is no DeleteResponse: not taken as a success
    ],
)
def test_delete_task_errors(tmp_path: Path, handler: Handler, error: type[Exception]) -> None:
    address = tmp_path / "c.sock"
    with grpc_fake(address, {TASKS_DELETE: handler}):
        result, elapsed = _timed(delete_task, str(address), "default", "c1", TIMEOUT)
    assert type(result) is error, result
    assert "Tasks.Delete" in str(result) and str(address) in str(result)
    assert elapsed < TIMEOUT + SLACK


def test_delete_task_with_nothing_listening(tmp_path: Path) -> None:
    result, elapsed = _timed(delete_task, str(tmp_path / "none.sock"), "default", "c1", TIMEOUT)
    assert isinstance(result, Unavailable), result
    assert "does not answer" in str(result)
    assert elapsed < TIMEOUT


def _junk(conn: socket.socket) -> None:
    try:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\nthis is no gRPC server\n" * 4)
    except OSError:
        pass


def _silent(conn: socket.socket) -> None:
    time.sleep(5)


@pytest.mark.parametrize("on_accept", [_junk, _silent], ids=["garbage-frames", "silent"])
def test_delete_task_against_a_peer_that_is_not_containerd(tmp_path: Path, on_accept: Any) -> None:
    address = tmp_path / "c.sock"
    with raw_fake(address, on_accept):
        result, elapsed = _timed(delete_task, str(address), "default", "c1", TIMEOUT)
    assert isinstance(result, Unavailable | DeadlineExceeded), result
    assert elapsed < TIMEOUT + SLACK


# -- Containers.Get -------------------------------------------------------------------------


def test_has_container_true_and_false(tmp_path: Path) -> None:
    address, seen = tmp_path / "c.sock", Seen()
    with grpc_fake(address, {CONTAINERS_GET: _getter(seen, {"here"})}):
        assert has_container(str(address), "ns1", "here", TIMEOUT) is True
        assert has_container(str(address), "ns2", "gone", TIMEOUT) is False
    assert [(ns, r.id) for ns, r in seen.calls] == [("ns1", "here"), ("ns2", "gone")]


@pytest.mark.parametrize(
    "handler",
    [
        sleeper(5),
        garbage,
        status(grpc.StatusCode.UNAVAILABLE, "going away"),
        status(grpc.StatusCode.PERMISSION_DENIED, "go away"),
        _getter(Seen(), {"here"}, answer_id="someone-else"),  # an answer about another id
    ],
    ids=["hangs", "garbage", "unavailable", "denied", "wrong-id"],
)
def test_has_container_unknown(tmp_path: Path, handler: Handler) -> None:
    address = tmp_path / "c.sock"
    with grpc_fake(address, {CONTAINERS_GET: handler}):
        found, elapsed = _timed(has_container, str(address), "default", "here", TIMEOUT)
    assert found is None
    assert elapsed < TIMEOUT + SLACK


def test_has_container_unknown_without_containerd(tmp_path: Path) -> None:
    assert has_container(str(tmp_path / "none.sock"), "default", "here", TIMEOUT) is None
    with raw_fake(tmp_path / "raw.sock", _junk):
        found, elapsed = _timed(has_container, str(tmp_path / "raw.sock"), "default", "x", TIMEOUT)
    assert found is None and elapsed < TIMEOUT + SLACK


def test_grpcio_is_not_imported_when_nothing_listens(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from shimctl.records.tasks import delete_task, has_container\n"
        f"assert has_container({str(tmp_path / 'none.sock')!r}, 'default', 'x', 1.0) is None\n"
        "try:\n"
        f"    delete_task({str(tmp_path / 'none.sock')!r}, 'default', 'x', 1.0)\n"
        "except Exception as err:\n"
        "    assert type(err).__name__ == 'Unavailable', err\n"
        "print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
