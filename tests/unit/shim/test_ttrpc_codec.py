"""ttrpc frame codec, envelopes, address parsing and status mapping (no shim needed)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from shimctl import errors
from shimctl.shim.address import parse_address
from shimctl.shim.frames import (
    MAX_MESSAGE,
    FrameHeader,
    decode_header,
    encode_frame,
    encode_request,
    parse_response,
    read_frame,
    read_response,
)
from shimctl.shim.proto import task_pb2, ttrpc_pb2
from shimctl.shim.task import (
    decode_delete_response,
    encode_any,
    runc_options_any,
    timestamp_to_datetime,
    validate_any,
)
from shimctl.shim.ttrpc import TtrpcClient

# spec/ttrpc.md §3: Connect{id:"c1"}, 5 s deadline, namespace "default" (verified bytes).
CONNECT_FRAME = bytes.fromhex(
    "00000055" "00000001" "01" "00"
    "0a17" + b"containerd.task.v2.Task".hex() + "1207" + b"Connect".hex()
    + "1a040a02" + b"c1".hex()
    + "2080e497d012"
    + "2a250a1a" + b"containerd-namespace-ttrpc".hex() + "1207" + b"default".hex()
)  # fmt: skip
CONNECT_RESPONSE = bytes.fromhex("00000005" "00000001" "02" "00" "120308952a")  # fmt: skip


def recv_from(data: bytes) -> Callable[[int], bytes]:
    """A recv(n) over a byte string, returning short reads to exercise reassembly."""
    view = memoryview(data)
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        n = min(n, 7) if n > 1 else n
        chunk = bytes(view[pos : pos + n])
        pos += len(chunk)
        return chunk

    return recv


def frame(sid: int, mtype: int, data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">IIBB", len(data), sid, mtype, flags) + data


def response(payload: bytes = b"", code: int | None = None, message: str = "") -> bytes:
    resp = ttrpc_pb2.Response(payload=payload)
    if code is not None:
        resp.status.code = code
        resp.status.message = message
    return resp.SerializeToString()


# -- frames ----------------------------------------------------------------------------------


def test_connect_request_frame_is_byte_exact() -> None:
    data = encode_request(
        "containerd.task.v2.Task",
        "Connect",
        task_pb2.ConnectRequest(id="c1").SerializeToString(),
        timeout_nano=5_000_000_000,
        namespace="default",
    )
    assert encode_frame(1, 1, 0, data) == CONNECT_FRAME


def test_connect_response_decodes() -> None:
    assert decode_header(CONNECT_RESPONSE) == FrameHeader(5, 1, 2, 0)
    payload = read_response(recv_from(CONNECT_RESPONSE), 1)
    reply = task_pb2.ConnectResponse.FromString(payload)
    assert (reply.shim_pid, reply.task_pid, reply.version) == (5397, 0, "")


def test_header_roundtrip_and_limits() -> None:
    raw = encode_frame(0xFFFFFFFF, 0xFF, 0xFF, b"xyz")
    assert decode_header(raw) == FrameHeader(3, 0xFFFFFFFF, 0xFF, 0xFF)
    assert raw[10:] == b"xyz"
    with pytest.raises(errors.ProtocolError):
        decode_header(b"\x00" * 9)
    for bad in [(-1, 1, 0), (1 << 32, 1, 0), (1, 256, 0), (1, 1, -1), (1, 1, 256)]:
        with pytest.raises(errors.InvalidArgument):
            encode_frame(bad[0], bad[1], bad[2], b"")


def test_encode_frame_refuses_oversized_data() -> None:
    assert len(encode_frame(1, 1, 0, bytes(MAX_MESSAGE))) == MAX_MESSAGE + 10
    with pytest.raises(errors.Unknown) as info:
        encode_frame(1, 1, 0, bytes(MAX_MESSAGE + 1))
    assert getattr(info.value, "grpc_code", None) == 8


def test_read_frame_reassembles_and_discards_oversized() -> None:
    big = frame(1, 2, b"\xaa" * (MAX_MESSAGE + 1))
    small = frame(3, 2, b"ok")
    recv = recv_from(big + small)
    header, data = read_frame(lambda n: recv(n))
    assert header == FrameHeader(MAX_MESSAGE + 1, 1, 2, 0)
    assert data is None
    assert read_frame(recv) == (FrameHeader(2, 3, 2, 0), b"ok")


def test_oversized_response_fails_call_with_resource_exhausted_and_keeps_step() -> None:
    stream = frame(1, 2, b"\x00" * (MAX_MESSAGE + 5)) + frame(3, 2, response(b"next"))
    recv = recv_from(stream)
    with pytest.raises(errors.Unknown) as info:
        read_response(recv, 1)
    assert getattr(info.value, "grpc_code", None) == 8
    assert str(info.value) == (
        f"message length {MAX_MESSAGE + 5} exceed maximum message size of 4194304"
    )
    assert read_response(recv, 3) == b"next"


def test_oversized_frame_for_other_stream_is_protocol_error_without_reading() -> None:
    consumed = 0

    def recv(n: int) -> bytes:
        nonlocal consumed
        out = struct.pack(">IIBB", 0xFFFFFFFF, 7, 2, 0)[consumed : consumed + n]
        consumed += len(out)
        if not out:
            raise AssertionError("read past the header")
        return out

    with pytest.raises(errors.ProtocolError):
        read_response(recv, 1)


def test_eof_mid_oversized_frame_is_closed() -> None:
    with pytest.raises(errors.ShimClosed):
        read_response(recv_from(struct.pack(">IIBB", MAX_MESSAGE + 1, 1, 2, 0) + b"x" * 100), 1)


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"", errors.ShimClosed),
        (CONNECT_RESPONSE[:4], errors.ShimClosed),
        (CONNECT_RESPONSE[:-1], errors.ShimClosed),
        (frame(3, 2, response()), errors.ProtocolError),  # another stream
        (frame(1, 1, response()), errors.ProtocolError),  # a Request
        (frame(1, 3, response()), errors.ProtocolError),  # Data
        (frame(1, 2, b"\x0a\xff\xff\xff\xff\x0f"), errors.ProtocolError),  # bad envelope
        (frame(1, 2, b"\x0a\x02\x12\x01"), errors.ProtocolError),  # truncated status
    ],
)
def test_bad_responses(stream: bytes, expected: type[errors.ShimctlError]) -> None:
    with pytest.raises(expected):
        read_response(recv_from(stream), 1)


# -- stream ids ------------------------------------------------------------------------------


@pytest.fixture
def echo_pair() -> Iterator[tuple[TtrpcClient, list[ttrpc_pb2.Request], list[int]]]:
    """A client on one end of a socketpair and an echoing responder on the other."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    requests: list[ttrpc_pb2.Request] = []
    ids: list[int] = []

    def serve() -> None:
        recv = theirs.recv
        try:
            while True:
                header, data = read_frame(recv)
                assert data is not None
                req = ttrpc_pb2.Request.FromString(data)
                requests.append(req)
                ids.append(header.stream_id)
                theirs.sendall(encode_frame(header.stream_id, 2, 0, response(req.payload)))
        except (errors.ShimctlError, OSError):
            return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = TtrpcClient(ours, "socketpair")
    yield client, requests, ids
    client.close()
    theirs.close()
    t.join(timeout=5)


def test_stream_ids_are_odd_and_increasing(
    echo_pair: tuple[TtrpcClient, list[ttrpc_pb2.Request], list[int]],
) -> None:
    client, requests, ids = echo_pair
    for i in range(5):
        assert client.call("s.S", "M", bytes([i]), timeout=5, namespace="ns") == bytes([i])
    assert ids == [1, 3, 5, 7, 9]
    assert all(0 < r.timeout_nano <= 5_000_000_000 for r in requests)
    assert all([(kv.key, kv.value) for kv in r.metadata] == [("containerd-namespace-ttrpc", "ns")]
               for r in requests)  # fmt: skip


def test_zero_or_negative_timeout_is_deadline_exceeded(
    echo_pair: tuple[TtrpcClient, list[ttrpc_pb2.Request], list[int]],
) -> None:
    client, requests, _ = echo_pair
    for t in (0, -1):
        with pytest.raises(errors.DeadlineExceeded):
            client.call("s.S", "M", b"", timeout=t, namespace="ns")
    assert not client.closed and requests == []
    with pytest.raises(errors.InvalidArgument):
        client.call("s.S", "M", b"", timeout=float("nan"), namespace="ns")


# -- addresses -------------------------------------------------------------------------------


def test_parse_address_forms() -> None:
    assert parse_address("unix:///run/containerd/s/abc") == "/run/containerd/s/abc"
    assert parse_address("/run/x.sock") == b"\0/run/x.sock"  # not unix://: abstract
    assert parse_address("\x40containerd-shim/k8s.io/c1/shim.sock") == (
        b"\0@containerd-shim/k8s.io/c1/shim.sock"
    )
    assert parse_address("unix:///" + "a" * 106) == "/" + "a" * 106
    assert parse_address("x" * 107) == b"\0" + b"x" * 107


@pytest.mark.parametrize(
    "address",
    [
        "",
        "   ",
        "\t\n",
        "unix:///run/a\0b",
        "abs\0tract",
        "unix:///" + "a" * 107,
        "y" * 108,
        "unix://relative/path",
        "unix://",
        "unix:///" + "é" * 54,  # 108 bytes in UTF-8
    ],
)
def test_parse_address_rejects(address: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_address(address)
    assert repr(address)[:50] in str(info.value)


def test_parse_address_truncates_huge_junk_in_message() -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_address("z" * 100_000)
    assert len(str(info.value)) < 200
    assert "'zzzz" in str(info.value)


# -- status mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (1, errors.Unknown),
        (2, errors.Unknown),
        (3, errors.InvalidArgument),
        (4, errors.DeadlineExceeded),
        (5, errors.NotFound),
        (6, errors.AlreadyExists),
        (7, errors.Unknown),
        (8, errors.Unknown),
        (9, errors.FailedPrecondition),
        (12, errors.NotImplementedByShim),
        (13, errors.Unknown),
        (14, errors.Unavailable),
        (99, errors.Unknown),
        (-1, errors.Unknown),
    ],
)
def test_status_code_classes(code: int, cls: type[errors.ShimctlError]) -> None:
    with pytest.raises(cls) as info:
        parse_response(response(b"ignored", code, "boom"))
    assert type(info.value) is cls
    assert getattr(info.value, "grpc_code", None) == code


def test_status_messages_follow_fromgrpc() -> None:
    with pytest.raises(errors.NotFound) as nf:
        parse_response(response(code=5, message="container not created: not found"))
    assert str(nf.value) == "container not created: not found"
    with pytest.raises(errors.NotImplementedByShim) as ni:
        parse_response(response(code=12, message="method Bogus"))
    assert str(ni.value) == "method Bogus: not implemented"
    with pytest.raises(errors.Unknown) as unk:
        parse_response(response(code=2, message="cannot delete a running process"))
    assert str(unk.value) == "cannot delete a running process"


def test_status_absent_or_ok_returns_payload() -> None:
    assert parse_response(response(b"p")) == b"p"
    assert parse_response(response(b"p", 0, "fine")) == b"p"
    assert parse_response(b"") == b""
    # Unknown fields are skipped.
    assert parse_response(response(b"p") + b"\x18\x01") == b"p"


# -- fuzz: the reader only ever raises shimctl errors ----------------------------------------

# `make fuzz` raises the example counts (test_fuzz_ttrpc.py fuzzes the layers above).
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def _feed(data: bytes) -> None:
    # Anything but a shimctl error (or a clean return) propagates and fails the test.
    with contextlib.suppress(errors.ShimctlError):
        read_response(recv_from(data), 1)


@settings(max_examples=max(400, FUZZ_EXAMPLES), deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _feed(data)


@settings(max_examples=max(400, FUZZ_EXAMPLES), deadline=None)
@given(
    body=st.binary(max_size=256),
    sid=st.sampled_from([1, 1, 1, 3, 0]),
    mtype=st.sampled_from([2, 2, 2, 1, 3]),
    flags=st.integers(0, 255),
    delta=st.sampled_from([0, 0, 0, -1, 1, 5]),
)
def test_fuzz_framed_bodies(body: bytes, sid: int, mtype: int, flags: int, delta: int) -> None:
    length = max(0, len(body) + delta)
    _feed(struct.pack(">IIBB", length, sid, mtype, flags) + body)


@settings(max_examples=max(300, FUZZ_EXAMPLES), deadline=None)
@given(
    payload=st.binary(max_size=64),
    code=st.integers(-(2**31), 2**31 - 1),
    message=st.text(max_size=64),
    junk=st.binary(max_size=32),
)
def test_fuzz_mutated_envelopes(payload: bytes, code: int, message: str, junk: bytes) -> None:
    env = response(payload, code, message)
    _feed(frame(1, 2, env + junk))
    _feed(frame(1, 2, junk + env))
    cut = len(env) // 2
    _feed(frame(1, 2, env[:cut]))


# -- task message helpers --------------------------------------------------------------------


def test_runc_options_any_matches_spec_example() -> None:
    assert runc_options_any(root="/x").hex() == (
        "0a1a636f6e7461696e6572642e72756e632e76312e4f7074696f6e7312043a022f78"
    )
    assert encode_any("containerd.runc.v1.Options", b"\x3a\x02/x") == runc_options_any(root="/x")
    with pytest.raises(errors.InvalidArgument):
        runc_options_any(no_such_field=1)


def test_validate_any() -> None:
    assert validate_any(runc_options_any(root="/x")) == ("containerd.runc.v1.Options", b":\x02/x")
    for bad in (b"\xff", b"", encode_any("containerd.runc.v1.Options", b"\x3a\x09/x")):
        with pytest.raises(errors.InvalidArgument):
            validate_any(bad, source="--options")


def test_timestamps_and_zero_time_quirk() -> None:
    zero = timestamp_pb2.Timestamp.FromString(bytes.fromhex("0880 92b8c398feffffff01"))
    assert zero.seconds == -62135596800
    assert timestamp_to_datetime(zero) is None
    ts = timestamp_pb2.Timestamp(seconds=1_700_000_000, nanos=123_456_789)
    assert timestamp_to_datetime(ts) == dt.datetime(2023, 11, 14, 22, 13, 20, 123456, dt.UTC)
    with pytest.raises(errors.ProtocolError):
        timestamp_to_datetime(timestamp_pb2.Timestamp(seconds=1, nanos=-1))
    with pytest.raises(errors.ProtocolError):
        timestamp_to_datetime(timestamp_pb2.Timestamp(seconds=2**62))


def test_decode_delete_response() -> None:
    msg = task_pb2.DeleteResponse(pid=42, exit_status=137)
    msg.exited_at.seconds = 1_700_000_000
    ex = decode_delete_response(msg.SerializeToString())
    assert (ex.pid, ex.exit_status) == (42, 137)
    assert ex.exited_at == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    # A never-started task: zero-time exited_at; and a missing one: both None.
    never = task_pb2.DeleteResponse(pid=7)
    never.exited_at.seconds = -62135596800
    assert decode_delete_response(never.SerializeToString()).exited_at is None
    assert decode_delete_response(b"").exited_at is None
    with pytest.raises(errors.ProtocolError):
        decode_delete_response(b"\x1a\x05\x08")
