"""Two point calls on containerd's gRPC API: Tasks.Delete and Containers.Get.

Tasks.Delete is the only write shimctl ever makes through containerd's API (everything else in
this package only reads). gc uses it for a task whose record containerd has, so containerd's
own view stays true: containerd stops monitoring the task, has the shim delete it, shuts the
shim down and removes the bundle itself before it answers (services/tasks/local.go Delete,
runtime/v2/manager.go TaskManager.Delete and shim.go shimTask.delete at containerd v1.6.20;
plugins/services/tasks/local.go and core/runtime/v2/task_manager.go at v2.1.9). Containers.Get
answers whether a record of an id exists right now (gc re-checks that under its lock before it
acts on "no record").

The namespace goes in the ``containerd-namespace`` metadata header. Each call has one deadline,
covering the connect; nothing here waits past it. As in api.py, grpcio and the message modules
are imported only after a plain connect to the address succeeded.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from shimctl.errors import (
    DeadlineExceeded,
    NotFound,
    ShimctlError,
    Unavailable,
    from_grpc_code,
)
from shimctl.records.api import NAMESPACE_HEADER, open_channel
from shimctl.records.peer import dial

TASKS_DELETE = "/containerd.services.tasks.v1.Tasks/Delete"
CONTAINERS_GET = "/containerd.services.containers.v1.Containers/Get"


class DeleteAnswer(NamedTuple):
    """containerd's DeleteResponse: the deleted task's init process and its exit."""

    pid: int
    exit_status: int
    exited_at: float | None  # Unix seconds; None when containerd sent none


def _seconds(ts: Any) -> float | None:
    if ts.seconds <= 0:  # unset, or Go's zero time
        return None
    return float(ts.seconds) + float(ts.nanos) / 1e9


def _error(grpc: Any, err: Exception, address: str, method: str) -> ShimctlError:
    """The shimctl error of a failed call: NotFound, DeadlineExceeded and Unavailable as
    containerd's errdefs classify them; Unavailable also for a peer that is not containerd
    (a frame that is not HTTP/2 ends the connection: gRPC says UNAVAILABLE)."""
    service, verb = method.lstrip("/").split("/")
    name = f"{service.rsplit('.', 1)[-1]}.{verb}"  # e.g. Tasks.Delete
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if not (callable(code) and callable(details)):
        return Unavailable(f"containerd at {address} answered {name} with garbage: {err}")
    status = code()
    text = f"containerd at {address}: {name}: {details() or status.name}"
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(text)
    if status == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(text)
    number = status.value[0] if isinstance(status.value, tuple) else 2
    return from_grpc_code(int(number), text)


def _call(
    address: str, namespace: str, method: str, request: Any, reply: Any, timeout: float
) -> Any:
    deadline = time.monotonic() + timeout
    peer = dial(address, timeout)
    if not peer.accepted:
        raise Unavailable(f"containerd does not answer at {address}: {peer.error}")
    try:
        import grpc
    except ImportError as err:  # a broken install: as if containerd did not answer
        raise Unavailable(f"grpcio is not importable: {err}") from None
    channel = open_channel(grpc, address)
    try:
        call = channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        return call(
            request,
            timeout=max(deadline - time.monotonic(), 0.001),
            metadata=((NAMESPACE_HEADER, namespace),),
        )
    except Exception as err:  # noqa: BLE001 - grpc.RpcError, or anything a hostile peer causes
        raise _error(grpc, err, address, method) from None
    finally:
        channel.close()


def delete_task(address: str, namespace: str, id: str, timeout: float) -> DeleteAnswer:
    """Tasks.Delete of task ``id`` in ``namespace`` through the containerd at ``address``.

    Raises NotFound (containerd has no such task, or no record of it), Unavailable (nothing
    answers, or not as containerd), DeadlineExceeded (no answer within ``timeout``: the delete
    may still complete), or the error class of containerd's status (FailedPrecondition for a
    task that runs)."""
    from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2

    answer = _call(
        address,
        namespace,
        TASKS_DELETE,
        tasks_pb2.DeleteTaskRequest(container_id=id),
        tasks_pb2.DeleteResponse,
        timeout,
    )
    exited_at = _seconds(answer.exited_at) if answer.HasField("exited_at") else None
    return DeleteAnswer(answer.pid, answer.exit_status, exited_at)


def has_container(address: str, namespace: str, id: str, timeout: float) -> bool | None:
    """Does the containerd at ``address`` have a container record ``id`` in ``namespace``?
    True, False (NotFound), or None when containerd does not answer properly in time."""
    from shimctl.records.proto.api.services.containers.v1 import containers_pb2

    try:
        answer = _call(
            address,
            namespace,
            CONTAINERS_GET,
            containers_pb2.GetContainerRequest(id=id),
            containers_pb2.GetContainerResponse,
            timeout,
        )
    except NotFound:
        return False
    except ShimctlError:
        return None
    # A well-formed answer names the record asked for; anything else is not containerd's word.
    return True if answer.container.id == id else None
