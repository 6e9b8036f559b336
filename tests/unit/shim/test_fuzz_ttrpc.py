"""Fuzz what a hostile shim controls beyond the frame reader (test_ttrpc_codec.py fuzzes
frames and the Response envelope): the task API messages inside it (timestamps included), the
whole client over a real socket, bootstrap params and addresses from bundle files. Nothing but
a documented shimctl error class may escape.

A few thousand cases run in the suite; `make fuzz` runs many more (FUZZ_EXAMPLES per test).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shimctl import errors
from shimctl.shim.address import MAX_SOCKET_PATH, parse_address
from shimctl.shim.bootstrap import parse_bootstrap
from shimctl.shim.proto import task_pb2, ttrpc_pb2
from shimctl.shim.task import TaskClient, decode_delete_response
from shimctl.shim.ttrpc import TtrpcClient

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> Any:
    """Hypothesis settings: `default` examples in the suite, FUZZ_EXAMPLES under make fuzz."""
    return settings(
        max_examples=max(default, FUZZ_EXAMPLES),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# -- task API messages -----------------------------------------------------------------------


class Canned:
    """A stand-in for TtrpcClient that answers every call with the given payload."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.address = "unix:///fuzz"

    def call(self, service: str, method: str, payload: bytes, **_: Any) -> bytes:  # noqa: ARG002
        return self.payload

    def close(self) -> None:
        pass


def _all_calls(payload: bytes) -> None:
    task = TaskClient(Canned(payload), "ns", timeout=1)  # type: ignore[arg-type]
    for call in (
        lambda: task.connect_info("c1"),
        lambda: task.pids("c1"),
        lambda: task.state("c1"),
        lambda: task.delete("c1"),
        lambda: task.wait("c1"),
        lambda: task.create("c1", "/b"),
        lambda: task.start("c1"),
        lambda: task.kill("c1", 9),
        lambda: task.shutdown("c1"),
        lambda: decode_delete_response(payload),
    ):
        with contextlib.suppress(errors.ShimctlError):
            call()


timestamps = st.tuples(
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-62135596800, 0, 253402300800])),
    st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 999_999_999, 10**9])),
)


@fuzz(800)
@given(st.binary(max_size=256))
def test_fuzz_task_payloads_arbitrary_bytes(payload: bytes) -> None:
    _all_calls(payload)


@fuzz(600)
@given(
    pid=st.integers(0, 2**32 - 1),
    status=st.integers(-(2**31), 2**31 - 1),
    exit_status=st.integers(0, 2**32 - 1),
    ts=timestamps,
    text=st.text(max_size=40),
    pids=st.lists(st.integers(0, 2**32 - 1), max_size=5),
    junk=st.binary(max_size=16),
)
def test_fuzz_task_payloads_structured(
    pid: int,
    status: int,
    exit_status: int,
    ts: tuple[int, int],
    text: str,
    pids: list[int],
    junk: bytes,
) -> None:
    seconds, nanos = ts
    messages = [
        task_pb2.StateResponse(id=text, bundle=text, pid=pid, status=status,  # type: ignore[arg-type]
                               exit_status=exit_status, exec_id=text),
        task_pb2.DeleteResponse(pid=pid, exit_status=exit_status),
        task_pb2.WaitResponse(exit_status=exit_status),
        task_pb2.ConnectResponse(shim_pid=pid, task_pid=pid, version=text),
        task_pb2.PidsResponse(processes=[task_pb2.ProcessInfo(pid=p) for p in pids]),
    ]  # fmt: skip
    for msg in messages:
        if hasattr(msg, "exited_at"):
            msg.exited_at.seconds = seconds  # type: ignore[attr-defined]
            msg.exited_at.nanos = nanos  # type: ignore[attr-defined]
        data = msg.SerializeToString()
        for payload in (data, data + junk, junk + data, data[: len(data) // 2]):
            _all_calls(payload)


# -- the whole client over a socket ----------------------------------------------------------


def _serve_once(server: socket.socket, answer: bytes) -> None:
    """Read one request frame, send `answer`, close."""
    with server:
        header = b""
        while len(header) < 10:
            chunk = server.recv(10 - len(header))
            if not chunk:
                return
            header += chunk
        length = struct.unpack(">I", header[:4])[0]
        left = length
        while left:
            chunk = server.recv(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
        with contextlib.suppress(OSError):
            server.sendall(answer)


def _frame(sid: int, mtype: int, data: bytes) -> bytes:
    return struct.pack(">IIBB", len(data), sid, mtype, 0) + data


answers = st.one_of(
    st.binary(max_size=128),
    st.builds(
        lambda sid, mtype, payload, junk: _frame(
            sid, mtype, ttrpc_pb2.Response(payload=payload).SerializeToString() + junk
        ),
        st.sampled_from([1, 1, 1, 3, 0, 2**32 - 1]),
        st.sampled_from([2, 2, 2, 1, 3, 255]),
        st.binary(max_size=64),
        st.binary(max_size=8),
    ),
)


@fuzz(300)
@given(answer=answers)
def test_fuzz_client_over_a_socket(answer: bytes) -> None:
    client_sock, server_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    server = threading.Thread(target=_serve_once, args=(server_sock, answer))
    server.start()
    try:
        with TtrpcClient(client_sock, "unix:///fuzz") as client:
            task = TaskClient(client, "ns", timeout=2)
            with contextlib.suppress(errors.ShimctlError):
                task.connect_info("c1", timeout=2)
            # After any failure the client refuses cleanly; after success it may be reused.
            with contextlib.suppress(errors.ShimctlError):
                task.pids("c1", timeout=0.05)
    finally:
        server.join(timeout=5)
    assert not server.is_alive()


# -- what bundle files say about the connection ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)


def _check_bootstrap(text: str) -> None:
    try:
        boot = parse_bootstrap(text, source="address")
    except errors.ShimctlError as err:
        assert isinstance(err, errors.InvalidArgument | errors.NotImplementedByShim), err
        return
    assert boot.address and boot.address == boot.address.strip()
    assert not any(ord(c) < 0x20 or c == "\x7f" for c in boot.address)
    assert boot.version in (2, 3) and boot.protocol == "ttrpc"
    try:
        target = parse_address(boot.address)
    except errors.InvalidArgument:
        return
    assert isinstance(target, str | bytes)
    if isinstance(target, bytes):
        assert target.startswith(b"\0") and len(target) <= MAX_SOCKET_PATH + 1


@fuzz(500)
@given(st.text(max_size=200))
def test_fuzz_address_text(text: str) -> None:
    _check_bootstrap(text)
    _check_bootstrap("unix://" + text)


@fuzz(400)
@given(
    doc=st.dictionaries(
        st.sampled_from(["version", "address", "protocol", "extra"]), json_values, max_size=4
    ),
    address=st.text(max_size=60),
)
def test_fuzz_bootstrap_json(doc: dict[str, Any], address: str) -> None:
    _check_bootstrap(json.dumps(doc))
    _check_bootstrap(json.dumps({**doc, "address": address}))
    _check_bootstrap(json.dumps({**doc, "address": "unix://" + address}))
