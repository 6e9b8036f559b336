"""read_owner_records against fake containerds (a Python gRPC server and raw sockets) for the
faults a real containerd does not show on demand: it hangs, refuses, answers garbage or an
error. Each gives "owner unknown" with a reason, never an exception, within its deadline; a
fake that answers properly gives the API's records (so the fakes are good enough to fail)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from shimctl.records.model import Source
from shimctl.records.owner import read_owner_records
from shimctl.records.proto.api.services.containers.v1 import containers_pb2
from shimctl.records.proto.api.services.namespaces.v1 import namespace_pb2
from shimctl.records.proto.api.services.sandbox.v1 import sandbox_pb2
from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
from shimctl.records.proto.api.services.version.v1 import version_pb2
from shimctl.records.proto.api.types import sandbox_pb2 as sandbox_types
from shimctl.records.proto.api.types.task import task_pb2
from tests.support.fake_containerd_api import (
    SLACK,
    Handler,
    garbage,
    grpc_fake,
    raw_fake,
    sleeper,
)

TIMEOUT = 1.0


def _answers() -> dict[str, Handler]:
    """A well-behaved containerd 2.x with two namespaces."""

    def namespaces(_: bytes, ctx: Any) -> bytes:
        reply = namespace_pb2.ListNamespacesResponse(
            namespaces=[
                namespace_pb2.Namespace(name="default"),
                namespace_pb2.Namespace(name="k8s.io"),
            ]
        )
        return reply.SerializeToString()

    def containers(_: bytes, ctx: Any) -> bytes:
        ns = dict(ctx.invocation_metadata()).get("containerd-namespace", "")
        c = containers_pb2.Container(
            id=f"c-{ns}",
            labels={"io.cri-containerd.kind": "container"},
            runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
            sandbox="pod" if ns == "k8s.io" else "",
            created_at=timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=500_000_000),
        )
        return containers_pb2.ListContainersResponse(containers=[c]).SerializeToString()

    def tasks(_: bytes, ctx: Any) -> bytes:
        ns = dict(ctx.invocation_metadata()).get("containerd-namespace", "")
        procs = [
            task_pb2.Process(id=f"c-{ns}", pid=4242, status=task_pb2.PAUSED),
            task_pb2.Process(
                id=f"gone-{ns}",
                pid=4343,
                status=task_pb2.STOPPED,
                exit_status=137,
                exited_at=timestamp_pb2.Timestamp(seconds=1_700_000_100),
            ),
        ]
        return tasks_pb2.ListTasksResponse(tasks=procs).SerializeToString()

    def sandboxes(_: bytes, ctx: Any) -> bytes:
        ns = dict(ctx.invocation_metadata()).get("containerd-namespace", "")
        boxes = (
            [
                sandbox_types.Sandbox(
                    sandbox_id="pod",
                    runtime=sandbox_types.Sandbox.Runtime(name="io.containerd.runc.v2"),
                    sandboxer="podsandbox",
                )
            ]
            if ns == "k8s.io"
            else []
        )
        return sandbox_pb2.StoreListResponse(list=boxes).SerializeToString()

    def version(_: bytes, ctx: Any) -> bytes:
        return version_pb2.VersionResponse(version="2.1.9-fake").SerializeToString()

    return {
        "/containerd.services.namespaces.v1.Namespaces/List": namespaces,
        "/containerd.services.containers.v1.Containers/List": containers,
        "/containerd.services.tasks.v1.Tasks/List": tasks,
        "/containerd.services.sandbox.v1.Store/List": sandboxes,
        "/containerd.services.version.v1.Version/Version": version,
    }


def _read(tmp_path: Path, address: Path, timeout: float = TIMEOUT) -> tuple[Any, float]:
    start = time.monotonic()
    records = read_owner_records(tmp_path / "root", str(address), timeout)
    return records, time.monotonic() - start


# -- a proper answer ------------------------------------------------------------------------


def test_a_proper_answer_is_read(tmp_path: Path) -> None:
    address = tmp_path / "c.sock"
    with grpc_fake(address, _answers()):
        records, _ = _read(tmp_path, address)
    assert records.source is Source.API, records.reason
    assert records.version == "2.1.9-fake" and records.reason == ""
    assert records.tasks_known and records.sandboxes_known
    assert records.containerd is not None and records.containerd.pid == os.getpid()
    k8s = records.namespace("k8s.io")
    assert sorted(records.namespaces) == ["default", "k8s.io"]
    # Each namespace's calls carried its own containerd-namespace header.
    assert list(k8s.containers) == ["c-k8s.io"]
    assert list(records.namespace("default").containers) == ["c-default"]
    c = k8s.containers["c-k8s.io"]
    assert (c.runtime, c.sandbox_id, dict(c.labels)) == (
        "io.containerd.runc.v2",
        "pod",
        {"io.cri-containerd.kind": "container"},
    )
    assert c.created_at == 1_700_000_000.5 and c.updated_at is None
    paused, gone = k8s.tasks["c-k8s.io"], k8s.tasks["gone-k8s.io"]
    assert (paused.pid, paused.status, paused.exited_at) == (4242, "paused", None)
    assert (gone.status, gone.exit_status, gone.exited_at) == ("stopped", 137, 1_700_000_100.0)
    assert k8s.sandboxes["pod"].sandboxer == "podsandbox"
    assert records.namespace("default").sandboxes == {}


def test_no_sandbox_store_is_containerd_16(tmp_path: Path) -> None:
    address = tmp_path / "c.sock"
    methods = _answers()
    del methods["/containerd.services.sandbox.v1.Store/List"]
    with grpc_fake(address, methods):
        records, _ = _read(tmp_path, address)
    assert records.source is Source.API, records.reason
    assert records.namespace("k8s.io").sandboxes == {} and records.sandboxes_known
    assert list(records.namespace("k8s.io").containers) == ["c-k8s.io"]


# -- faults ---------------------------------------------------------------------------------


def _denied(_: bytes, ctx: Any) -> bytes:
    ctx.abort(grpc.StatusCode.PERMISSION_DENIED, "go away")
    return b""


@pytest.mark.parametrize(
    ("method", "handler", "failure"),
    [
        (
            "/containerd.services.namespaces.v1.Namespaces/List",
            sleeper(5),
            "api:DEADLINE_EXCEEDED",
        ),
        (
            "/containerd.services.containers.v1.Containers/List",
            sleeper(5),
            "api:DEADLINE_EXCEEDED",
        ),
        ("/containerd.services.version.v1.Version/Version", sleeper(5), "api:DEADLINE_EXCEEDED"),
        ("/containerd.services.namespaces.v1.Namespaces/List", garbage, "api:INTERNAL"),
        ("/containerd.services.containers.v1.Containers/List", garbage, "api:INTERNAL"),
        ("/containerd.services.version.v1.Version/Version", garbage, "api:INTERNAL"),
        ("/containerd.services.containers.v1.Containers/List", _denied, "api:PERMISSION_DENIED"),
        ("/containerd.services.namespaces.v1.Namespaces/List", _denied, "api:PERMISSION_DENIED"),
    ],
)
def test_bad_grpc_answers(tmp_path: Path, method: str, handler: Handler, failure: str) -> None:
    address = tmp_path / "c.sock"
    methods = _answers()
    methods[method] = handler
    with grpc_fake(address, methods):
        records, elapsed = _read(tmp_path, address)
    assert records.source is Source.UNKNOWN and not records.known
    assert records.failure == failure, records.reason
    assert records.namespaces == {}
    assert records.containerd is not None  # who answered badly is still known
    assert elapsed < TIMEOUT + SLACK


TASKS = "/containerd.services.tasks.v1.Tasks/List"
SANDBOXES = "/containerd.services.sandbox.v1.Store/List"


@pytest.mark.parametrize(
    ("method", "handler", "text"),
    [
        (TASKS, sleeper(5), "DEADLINE_EXCEEDED"),  # 1.6 asking hung shims one by one
        (TASKS, garbage, "INTERNAL"),
        (TASKS, _denied, "PERMISSION_DENIED"),
        (SANDBOXES, sleeper(5), "DEADLINE_EXCEEDED"),
        (SANDBOXES, garbage, "INTERNAL"),
        (SANDBOXES, _denied, "PERMISSION_DENIED"),
    ],
)
def test_tasks_or_sandboxes_failing_leave_the_container_records(
    tmp_path: Path, method: str, handler: Handler, text: str
) -> None:
    address = tmp_path / "c.sock"
    methods = _answers()
    methods[method] = handler
    with grpc_fake(address, methods):
        records, elapsed = _read(tmp_path, address)
    assert records.source is Source.API and records.failure == ""
    assert list(records.namespace("k8s.io").containers) == ["c-k8s.io"]
    assert text in records.reason
    if method == TASKS:
        assert not records.tasks_known and records.sandboxes_known
        assert records.namespace("k8s.io").tasks == {}
        assert list(records.namespace("k8s.io").sandboxes) == ["pod"]
    else:
        assert records.tasks_known and not records.sandboxes_known
        assert records.namespace("k8s.io").sandboxes == {}
        assert sorted(records.namespace("k8s.io").tasks) == ["c-k8s.io", "gone-k8s.io"]
    assert elapsed < TIMEOUT + SLACK


def _hang(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def _close(conn: socket.socket) -> None:
    conn.close()


def _spew(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.recv(65536)
        conn.sendall(os.urandom(4096))
        _hang(conn)


def _fake_settings(conn: socket.socket) -> None:
    """An HTTP/2 SETTINGS frame header announcing a 16 MiB payload that never comes."""
    with contextlib.suppress(OSError):
        conn.sendall(b"\xff\xff\xff\x04\x00\x00\x00\x00\x00")
        _hang(conn)


@pytest.mark.parametrize("behaviour", [_hang, _close, _spew, _fake_settings])
def test_bad_peers(tmp_path: Path, behaviour: Callable[[socket.socket], None]) -> None:
    address = tmp_path / "c.sock"
    with raw_fake(address, behaviour):
        records, elapsed = _read(tmp_path, address)
    assert records.source is Source.UNKNOWN
    assert records.failure.startswith("api:"), records.reason
    assert "did not answer" in records.reason
    assert elapsed < TIMEOUT + SLACK


def test_refused_then_no_metadb(tmp_path: Path) -> None:
    """A socket nobody listens on (containerd died) and no meta.db: unknown, at once."""
    address = tmp_path / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(address))
    try:
        records, elapsed = _read(tmp_path, address)
    finally:
        dead.close()
    assert records.source is Source.UNKNOWN and records.failure == "missing"
    assert "not answering" in records.reason
    assert elapsed < 0.5


def test_full_backlog_does_not_wait(tmp_path: Path) -> None:
    address = tmp_path / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(4):  # never accepted: the backlog fills up
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(str(address))
            fillers.append(s)
        records, elapsed = _read(tmp_path, address)
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert records.source is Source.UNKNOWN
    assert elapsed < TIMEOUT + SLACK


LAZY = """
import sys
from pathlib import Path
from shimctl.records.owner import read_owner_records
r = read_owner_records(Path(sys.argv[1]), sys.argv[2], 1.0)
print(r.source.value, "grpc" in sys.modules, "google.protobuf" in sys.modules)
"""


def test_grpc_is_imported_only_when_the_socket_accepts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])}
    missing = subprocess.run(
        [sys.executable, "-c", LAZY, str(tmp_path), str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert missing.stdout.split() == ["unknown", "False", "False"], missing.stderr
    address = tmp_path / "c.sock"
    with raw_fake(address, _close):
        accepted = subprocess.run(
            [sys.executable, "-c", LAZY, str(tmp_path), str(address)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    assert accepted.stdout.split() == ["unknown", "True", "True"], accepted.stderr
