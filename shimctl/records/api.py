"""containerd's gRPC API as evidence: what a running containerd says it owns.

Calls (the vendored protos under ``proto/``, containerd api/ at v2.1.9; the services and the
List calls used here exist unchanged from 1.6 on, the sandbox store from 1.7):

- ``containerd.services.version.v1.Version/Version`` and
  ``containerd.services.namespaces.v1.Namespaces/List`` once;
- per namespace (in the ``containerd-namespace`` metadata header, as containerd's
  namespaces.WithNamespace sends it): ``Containers/List``, ``Tasks/List`` and the sandbox
  ``Store/List``, all at once on one channel. UNIMPLEMENTED from the sandbox store is
  containerd 1.6, which has none: no sandboxes.

Every call shares one deadline. Whatever goes wrong with the namespaces, the container
records or the version (no answer, a refusal, a frame that is not HTTP/2, a message that does
not decode, a deadline) gives an "owner unknown" result with the reason; when only Tasks.List
or the sandbox store fails, the records come with ``tasks_known`` (or ``sandboxes_known``)
False (see ``_Partial``). Nothing escapes :func:`query_api` and nothing waits past its
deadline.

grpcio (~40-70 ms to import) and these message modules (~15 ms) are imported only after a
plain connect to the address succeeded (see :mod:`shimctl.records.peer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from shimctl.node.processes import started_at_wall_clock
from shimctl.records.model import (
    ContainerRecord,
    NamespaceRecords,
    OwnerRecords,
    SandboxRecord,
    Source,
    TaskRecord,
    frozen_map,
    unknown,
)
from shimctl.records.peer import Peer, socket_path

NAMESPACE_HEADER = "containerd-namespace"
#: Container records carry their OCI spec (a few KiB each): 1,000 of them exceed grpcio's
#: default 4 MiB limit.
MAX_MESSAGE = 64 << 20

VERSION = "/containerd.services.version.v1.Version/Version"
NAMESPACES = "/containerd.services.namespaces.v1.Namespaces/List"
CONTAINERS = "/containerd.services.containers.v1.Containers/List"
TASKS = "/containerd.services.tasks.v1.Tasks/List"
SANDBOXES = "/containerd.services.sandbox.v1.Store/List"

_STATUS = {0: "unknown", 1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "pausing"}


def _seconds(ts: Any) -> float | None:
    """Unix seconds of a google.protobuf.Timestamp; None for an unset or zero Go time."""
    if ts is None or ts.seconds <= 0:
        return None
    return float(ts.seconds) + float(ts.nanos) / 1e9


def container_record(c: Any) -> ContainerRecord:
    return ContainerRecord(
        id=c.id,
        runtime=c.runtime.name,
        labels=frozen_map(dict(c.labels)),
        sandbox_id=c.sandbox,
        image=c.image,
        created_at=_seconds(c.created_at) if c.HasField("created_at") else None,
        updated_at=_seconds(c.updated_at) if c.HasField("updated_at") else None,
    )


def task_record(p: Any) -> TaskRecord:
    return TaskRecord(
        id=p.id or p.container_id,
        pid=p.pid,
        status=_STATUS.get(p.status, "unknown"),
        exit_status=p.exit_status,
        exited_at=_seconds(p.exited_at) if p.HasField("exited_at") else None,
    )


def sandbox_record(s: Any) -> SandboxRecord:
    return SandboxRecord(
        id=s.sandbox_id,
        runtime=s.runtime.name,
        sandboxer=s.sandboxer,
        labels=frozen_map(dict(s.labels)),
        created_at=_seconds(s.created_at) if s.HasField("created_at") else None,
        updated_at=_seconds(s.updated_at) if s.HasField("updated_at") else None,
    )


class _Calls:
    """Unary calls on one channel, every one bounded by the same absolute deadline."""

    def __init__(self, grpc: Any, channel: Any, deadline: float) -> None:
        self.grpc = grpc
        self.channel = channel
        self.deadline = deadline

    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.001)

    def start(self, method: str, request: Any, reply: Any, namespace: str | None) -> Any:
        """Send a call; returns its future (``.result()`` raises grpc.RpcError)."""
        call = self.channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        metadata = ((NAMESPACE_HEADER, namespace),) if namespace is not None else None
        return call.future(request, timeout=self.remaining(), metadata=metadata)

    def unimplemented(self, err: Exception) -> bool:
        code: Callable[[], Any] | None = getattr(err, "code", None)
        return callable(code) and code() == self.grpc.StatusCode.UNIMPLEMENTED


def _describe(err: Exception) -> tuple[str, str]:
    """(failure code, text) of an error from a call."""
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if callable(code) and callable(details):
        name = str(getattr(code(), "name", code()))
        return f"api:{name}", f"{name}: {details()}"
    return f"api:{type(err).__name__}", f"{type(err).__name__}: {err}"


class _Partial:
    """Tasks.List and the sandbox store may fail while the container records came: containerd
    1.6 asks every shim for its state one after the other, each with a 2 s timeout
    (services/tasks/local.go at v1.6.20, addTasks), so a few hung shims outlast any deadline
    of ours. Then the containers are still the owner's word; only tasks (or sandboxes) are
    marked unknown."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.sandboxes: list[str] = []

    def reason(self) -> str:
        parts = [f"Tasks.List failed ({'; '.join(self.tasks)})"] if self.tasks else []
        if self.sandboxes:
            parts.append(f"the sandbox store failed ({'; '.join(self.sandboxes)})")
        return ", ".join(parts)


def _query(
    grpc: Any, channel: Any, deadline: float
) -> tuple[str, Mapping[str, NamespaceRecords], _Partial]:
    from shimctl.records.proto.api.services.containers.v1 import containers_pb2
    from shimctl.records.proto.api.services.namespaces.v1 import namespace_pb2
    from shimctl.records.proto.api.services.sandbox.v1 import sandbox_pb2
    from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
    from shimctl.records.proto.api.services.version.v1 import version_pb2

    calls = _Calls(grpc, channel, deadline)
    from google.protobuf import empty_pb2

    version_call = calls.start(VERSION, empty_pb2.Empty(), version_pb2.VersionResponse, None)
    ns_call = calls.start(
        NAMESPACES,
        namespace_pb2.ListNamespacesRequest(),
        namespace_pb2.ListNamespacesResponse,
        None,
    )
    names = [n.name for n in ns_call.result().namespaces]
    pending = {
        name: (
            calls.start(
                CONTAINERS,
                containers_pb2.ListContainersRequest(),
                containers_pb2.ListContainersResponse,
                name,
            ),
            calls.start(TASKS, tasks_pb2.ListTasksRequest(), tasks_pb2.ListTasksResponse, name),
            calls.start(
                SANDBOXES, sandbox_pb2.StoreListRequest(), sandbox_pb2.StoreListResponse, name
            ),
        )
        for name in names
    }
    version = version_call.result().version
    found: dict[str, NamespaceRecords] = {}
    partial = _Partial()
    for name, (containers_call, tasks_call, sandboxes_call) in pending.items():
        containers = [container_record(c) for c in containers_call.result().containers]
        tasks: list[TaskRecord] = []
        try:
            tasks = [task_record(p) for p in tasks_call.result().tasks]
        except Exception as err:  # noqa: BLE001 - see _Partial
            partial.tasks.append(f"{name}: {_describe(err)[1]}")
        sandboxes: list[SandboxRecord] = []
        try:
            sandboxes = [sandbox_record(s) for s in sandboxes_call.result().list]
        except Exception as err:  # noqa: BLE001 - a hostile peer: anything is owner unknown
            if not calls.unimplemented(err):  # UNIMPLEMENTED: containerd 1.6, no store
                partial.sandboxes.append(f"{name}: {_describe(err)[1]}")
        found[name] = NamespaceRecords(
            name,
            containers=frozen_map({c.id: c for c in containers}),
            tasks=frozen_map({t.id: t for t in tasks}),
            sandboxes=frozen_map({s.id: s for s in sandboxes}),
        )
    return version, found, partial


def open_channel(grpc: Any, address: str) -> Any:
    """A channel to containerd's socket: answers bounded, no retries (every call has its own
    deadline), no proxy."""
    return grpc.insecure_channel(
        f"unix:{socket_path(address)}",
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.enable_retries", 0),
            ("grpc.enable_http_proxy", 0),
        ],
    )


def query_api(address: str, peer: Peer, timeout: float) -> OwnerRecords:
    """Ask the containerd at ``address`` (``peer``: it accepted a connect) for its records,
    within ``timeout`` seconds in all. Never raises; "owner unknown" on any failure."""
    deadline = time.monotonic() + timeout
    try:
        import grpc
    except ImportError as err:  # a broken install: shimctl behaves as without records
        return unknown("api:ImportError", f"grpcio is not importable: {err}", peer.ref)
    channel = None
    try:
        channel = open_channel(grpc, address)
        version, namespaces, partial = _query(grpc, channel, deadline)
    except Exception as err:  # noqa: BLE001 - grpc.RpcError, a decode error, anything from a hostile peer
        failure, text = _describe(err)
        return unknown(failure, f"containerd at {address} did not answer: {text}", peer.ref)
    finally:
        if channel is not None:
            channel.close()
    return OwnerRecords(
        Source.API,
        namespaces=frozen_map(namespaces),
        tasks_known=not partial.tasks,
        sandboxes_known=not partial.sandboxes,
        containerd=peer.ref,
        containerd_started_at=started_at_wall_clock(peer.ref) if peer.ref else None,
        version=version,
        reason=partial.reason(),
    )
