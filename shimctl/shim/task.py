"""Typed calls of the shim Task service (`containerd.task.v2.Task`, or v3) over ttrpc.

Results are small immutable records (NamedTuples). Timestamps become timezone-aware
datetimes; the zero time Go sends for "never" (0001-01-01T00:00:00Z) and a missing timestamp
become None.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from shimctl import errors
from shimctl.shim.bootstrap import SUPPORTED_VERSIONS, service_name
from shimctl.shim.proto import runc_options_pb2, task_pb2
from shimctl.shim.ttrpc import TtrpcClient

RUNC_OPTIONS_TYPE_URL = "containerd.runc.v1.Options"
API_VERSIONS = SUPPORTED_VERSIONS

# Go's zero time.Time as a protobuf Timestamp: 0001-01-01T00:00:00Z.
ZERO_TIME_SECONDS = -62135596800

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_STATUS_NAMES = {
    task_pb2.UNKNOWN: "unknown",
    task_pb2.CREATED: "created",
    task_pb2.RUNNING: "running",
    task_pb2.STOPPED: "stopped",
    task_pb2.PAUSED: "paused",
    task_pb2.PAUSING: "pausing",
}

_M = TypeVar("_M", bound=Message)


# -- result types --------------------------------------------------------------------------
# NamedTuples, not dataclasses: immutable records all the same, and about a seventh of the
# cost to define, which every `shimctl start` pays at import.


class Mount(NamedTuple):
    """containerd.types.Mount (containerd never sends `target` for rootfs mounts)."""

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


class ConnectInfo(NamedTuple):
    shim_pid: int
    task_pid: int
    version: str


class TaskState(NamedTuple):
    id: str
    bundle: str
    pid: int
    status: str
    """One of unknown, created, running, stopped, paused, pausing."""
    exit_status: int
    exited_at: dt.datetime | None
    exec_id: str = ""
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False


class Exit(NamedTuple):
    pid: int
    exit_status: int
    exited_at: dt.datetime | None = None


# -- encoding helpers ----------------------------------------------------------------------


def _decode(cls: type[_M], data: bytes, what: str) -> _M:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception as err:  # noqa: BLE001 - DecodeError and whatever else the runtime raises
        raise errors.ProtocolError(f"undecodable {what}: {err}") from None
    return msg


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> dt.datetime | None:
    """Timestamp -> aware UTC datetime (microsecond precision); the Go zero time -> None."""
    if ts.seconds == ZERO_TIME_SECONDS and ts.nanos == 0:
        return None
    if not 0 <= ts.nanos <= 999_999_999:
        raise errors.ProtocolError(f"timestamp nanos out of range: {ts.nanos}")
    try:
        return _EPOCH + dt.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    except OverflowError:
        raise errors.ProtocolError(f"timestamp out of range: {ts.seconds}s") from None


def _exited_at(msg: Message, name: str) -> dt.datetime | None:
    if not msg.HasField(name):
        return None
    ts = getattr(msg, name)
    assert isinstance(ts, timestamp_pb2.Timestamp)
    return timestamp_to_datetime(ts)


def encode_any(type_url: str, value: bytes) -> bytes:
    """Encoded google.protobuf.Any. containerd type URLs carry no type.googleapis.com/."""
    return any_pb2.Any(type_url=type_url, value=value).SerializeToString()


def runc_options_any(**fields: Any) -> bytes:
    """An encoded Any holding containerd.runc.v1.Options, e.g. runc_options_any(root="/x")."""
    try:
        opts = runc_options_pb2.Options(**fields)
    except (ValueError, TypeError) as err:
        raise errors.InvalidArgument(f"bad runc options: {err}") from None
    return encode_any(RUNC_OPTIONS_TYPE_URL, opts.SerializeToString())


def validate_any(data: bytes, *, source: str = "options") -> tuple[str, bytes]:
    """Check `data` is an encoded google.protobuf.Any with a type URL (and, for runc
    Options, a decodable value). Returns (type_url, value); InvalidArgument otherwise."""
    msg = any_pb2.Any()
    try:
        msg.ParseFromString(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises more than DecodeError
        raise errors.InvalidArgument(f"{source}: not an encoded protobuf Any: {err}") from None
    if not msg.type_url:
        raise errors.InvalidArgument(f"{source}: protobuf Any without a type URL")
    if msg.type_url == RUNC_OPTIONS_TYPE_URL:
        try:
            runc_options_pb2.Options().ParseFromString(msg.value)
        except Exception as err:  # noqa: BLE001 - protobuf raises more than DecodeError
            raise errors.InvalidArgument(
                f"{source}: undecodable {RUNC_OPTIONS_TYPE_URL}: {err}"
            ) from None
    return msg.type_url, msg.value


# Requests and replies of the three read-only calls a probe makes; shared by TaskClient and the
# pipelining prober (shim/prober.py) so both read a shim's answers the same way.


def connect_request(id: str) -> bytes:
    return task_pb2.ConnectRequest(id=id).SerializeToString()


def pids_request(id: str) -> bytes:
    return task_pb2.PidsRequest(id=id).SerializeToString()


def state_request(id: str, exec_id: str = "") -> bytes:
    return task_pb2.StateRequest(id=id, exec_id=exec_id).SerializeToString()


def decode_connect(data: bytes) -> ConnectInfo:
    r = _decode(task_pb2.ConnectResponse, data, "Connect response")
    return ConnectInfo(r.shim_pid, r.task_pid, r.version)


def decode_pids(data: bytes) -> list[int]:
    return [p.pid for p in _decode(task_pb2.PidsResponse, data, "Pids response").processes]


def decode_state(data: bytes) -> TaskState:
    r = _decode(task_pb2.StateResponse, data, "State response")
    return TaskState(
        id=r.id,
        bundle=r.bundle,
        pid=r.pid,
        status=_STATUS_NAMES.get(r.status, "unknown"),
        exit_status=r.exit_status,
        exited_at=_exited_at(r, "exited_at"),
        exec_id=r.exec_id,
        stdin=r.stdin,
        stdout=r.stdout,
        stderr=r.stderr,
        terminal=r.terminal,
    )


def decode_delete_response(data: bytes) -> Exit:
    """A DeleteResponse (as the shim binary's `delete` verb prints it) -> Exit."""
    resp = _decode(task_pb2.DeleteResponse, data, "DeleteResponse")
    return Exit(resp.pid, resp.exit_status, _exited_at(resp, "exited_at"))


# -- client --------------------------------------------------------------------------------


class TaskClient:
    """The Task service of one shim, over one ttrpc connection."""

    def __init__(
        self,
        client: TtrpcClient,
        namespace: str,
        *,
        timeout: float,
        api_version: int = 2,
    ) -> None:
        if api_version not in API_VERSIONS:
            raise errors.InvalidArgument(f"unsupported shim task API version {api_version}")
        self.ttrpc = client
        self.namespace = namespace
        self.timeout = timeout
        self.api_version = api_version
        self.service = service_name(api_version)

    @classmethod
    def connect(
        cls,
        address: str,
        namespace: str,
        *,
        timeout: float,
        api_version: int = 2,
    ) -> TaskClient:
        """Dial `address` (within `timeout`); `timeout` is also the default per call."""
        if api_version not in API_VERSIONS:
            raise errors.InvalidArgument(f"unsupported shim task API version {api_version}")
        client = TtrpcClient.connect(address, timeout=timeout)
        return cls(client, namespace, timeout=timeout, api_version=api_version)

    def close(self) -> None:
        self.ttrpc.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, request: Message, reply: type[_M], timeout: float | None) -> _M:
        data = self._call_raw(method, request.SerializeToString(), timeout)
        return _decode(reply, data, f"{method} response")

    def _call_empty(self, method: str, request: Message, timeout: float | None) -> None:
        self._call(method, request, empty_pb2.Empty, timeout)

    def _call_raw(self, method: str, request: bytes, timeout: float | None) -> bytes:
        return self.ttrpc.call(
            self.service,
            method,
            request,
            timeout=self.timeout if timeout is None else timeout,
            namespace=self.namespace,
        )

    def connect_info(self, id: str, *, timeout: float | None = None) -> ConnectInfo:
        return decode_connect(self._call_raw("Connect", connect_request(id), timeout))

    def negotiate(self, id: str, *, timeout: float | None = None) -> ConnectInfo:
        """Connect, for a shim whose bootstrap params are unknown (an orphan process): the
        client's API version first, then the other one (2.x shims serve only
        containerd.task.v3.Task, older ones only v2). The client keeps the one that answered."""
        try:
            return self.connect_info(id, timeout=timeout)
        except errors.NotImplementedByShim:
            other = 3 if self.api_version == 2 else 2
            self.api_version, self.service = other, service_name(other)
            return self.connect_info(id, timeout=timeout)

    def pids(self, id: str, *, timeout: float | None = None) -> list[int]:
        return decode_pids(self._call_raw("Pids", pids_request(id), timeout))

    def state(self, id: str, exec_id: str = "", *, timeout: float | None = None) -> TaskState:
        return decode_state(self._call_raw("State", state_request(id, exec_id), timeout))

    def create(
        self,
        id: str,
        bundle: str,
        *,
        rootfs: Sequence[Mount] = (),
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
        options: bytes | None = None,
        timeout: float | None = None,
    ) -> int:
        """Create the task; returns the init pid. `options` is an encoded Any."""
        req = task_pb2.CreateTaskRequest(
            id=id,
            bundle=bundle,
            rootfs=[
                task_pb2.Mount(type=m.type, source=m.source, target=m.target, options=m.options)
                for m in rootfs
            ],
            terminal=terminal,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        if options is not None:
            validate_any(options)
            req.options.ParseFromString(options)
        return self._call("Create", req, task_pb2.CreateTaskResponse, timeout).pid

    def start(self, id: str, exec_id: str = "", *, timeout: float | None = None) -> int:
        req = task_pb2.StartRequest(id=id, exec_id=exec_id)
        return self._call("Start", req, task_pb2.StartResponse, timeout).pid

    def kill(
        self,
        id: str,
        signal: int,
        all_processes: bool = False,
        exec_id: str = "",
        *,
        timeout: float | None = None,
    ) -> None:
        if not 0 <= signal <= 0xFFFFFFFF:
            raise errors.InvalidArgument(f"signal out of range: {signal}")
        req = task_pb2.KillRequest(id=id, exec_id=exec_id, signal=signal, all=all_processes)
        self._call_empty("Kill", req, timeout)

    def wait(self, id: str, exec_id: str = "", *, timeout: float | None = None) -> Exit:
        """Block until the process exits (the shim ignores the deadline; we do not)."""
        req = task_pb2.WaitRequest(id=id, exec_id=exec_id)
        r = self._call("Wait", req, task_pb2.WaitResponse, timeout)
        return Exit(0, r.exit_status, _exited_at(r, "exited_at"))

    def delete(self, id: str, exec_id: str = "", *, timeout: float | None = None) -> Exit:
        req = task_pb2.DeleteRequest(id=id, exec_id=exec_id)
        r = self._call("Delete", req, task_pb2.DeleteResponse, timeout)
        return Exit(r.pid, r.exit_status, _exited_at(r, "exited_at"))

    def shutdown(self, id: str, now: bool = False, *, timeout: float | None = None) -> None:
        """Ask the shim to exit (a no-op while it still holds a task). The connection
        ending during the call counts as success, as in containerd."""
        with contextlib.suppress(errors.ShimClosed):
            self._call_empty("Shutdown", task_pb2.ShutdownRequest(id=id, now=now), timeout)
