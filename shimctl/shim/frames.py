"""The ttrpc frame codec: plain functions over bytes and a `recv`, fuzzable without a socket.

Wire format (spec/ttrpc.md): every message is a 10-byte big-endian header (data length u32,
stream id u32, type u8, flags u8) followed by the data; requests are `ttrpc.Request`
envelopes, answers `ttrpc.Response` envelopes (github.com/containerd/ttrpc, channel.go).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Collection
from typing import NamedTuple

from shimctl import errors
from shimctl.shim.proto import ttrpc_pb2

MAX_MESSAGE = 4 * 1024 * 1024
"""Largest frame data length either side accepts (4 MiB)."""

HEADER_SIZE = 10
MSG_TYPE_REQUEST = 0x01
MSG_TYPE_RESPONSE = 0x02

NAMESPACE_KEY = "containerd-namespace-ttrpc"
CODE_RESOURCE_EXHAUSTED = 8

_HEADER = struct.Struct(">IIBB")
MAX_STREAM_ID = 0xFFFFFFFF
_READ_CHUNK = 64 * 1024


class FrameHeader(NamedTuple):
    length: int
    stream_id: int
    msg_type: int
    flags: int


# -- frame codec ---------------------------------------------------------------------------


def too_large(length: int) -> errors.ShimctlError:
    """The error ttrpc gives for a message over MAX_MESSAGE (code 8, RESOURCE_EXHAUSTED)."""
    return errors.from_grpc_code(
        CODE_RESOURCE_EXHAUSTED,
        f"message length {length} exceed maximum message size of {MAX_MESSAGE}",
    )


def encode_frame(stream_id: int, msg_type: int, flags: int, data: bytes) -> bytes:
    """Header + data. Raises InvalidArgument for out-of-range header fields and the
    RESOURCE_EXHAUSTED error for data longer than MAX_MESSAGE."""
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise errors.InvalidArgument(f"ttrpc stream id out of range: {stream_id}")
    if not 0 <= msg_type <= 0xFF:
        raise errors.InvalidArgument(f"ttrpc message type out of range: {msg_type}")
    if not 0 <= flags <= 0xFF:
        raise errors.InvalidArgument(f"ttrpc flags out of range: {flags}")
    if len(data) > MAX_MESSAGE:
        raise too_large(len(data))
    return _HEADER.pack(len(data), stream_id, msg_type, flags) + bytes(data)


def decode_header(b: bytes) -> FrameHeader:
    """Decode the first HEADER_SIZE bytes of `b`. Does not judge the length field."""
    if len(b) < HEADER_SIZE:
        raise errors.ProtocolError(f"short ttrpc header: {len(b)} of {HEADER_SIZE} bytes")
    length, stream_id, msg_type, flags = _HEADER.unpack_from(b)
    return FrameHeader(length, stream_id, msg_type, flags)


def _varint(n: int) -> bytes:
    """A protobuf varint; negative int64 values as their 64-bit two's complement."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _bytes_field(tag: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2); proto3 leaves an empty one out."""
    return bytes((tag << 3 | 2,)) + _varint(len(value)) + value if value else b""


@functools.lru_cache(maxsize=64)
def request_parts(service: str, method: str, namespace: str) -> tuple[bytes, bytes]:
    """The fixed bytes of a ttrpc.Request before its payload (service, method) and after its
    timeout (the namespace metadata): the prober sends thousands of requests that differ only
    in payload and timeout."""
    prefix = _bytes_field(1, service.encode()) + _bytes_field(2, method.encode())
    suffix = b""
    if namespace:
        pair = _bytes_field(1, NAMESPACE_KEY.encode()) + _bytes_field(2, namespace.encode())
        suffix = b"\x2a" + _varint(len(pair)) + pair
    return prefix, suffix


def encode_request(
    service: str,
    method: str,
    payload: bytes,
    *,
    timeout_nano: int = 0,
    namespace: str = "",
) -> bytes:
    """The ttrpc.Request envelope (frame data of a type-1 frame), byte for byte what protobuf
    serialises (fields in number order, proto3 defaults left out): written by hand, as it is
    on every probe's path (github.com/containerd/ttrpc, request.proto)."""
    if not -(1 << 63) <= timeout_nano < 1 << 63:
        raise ValueError(f"Value out of range: {timeout_nano}")
    prefix, suffix = request_parts(service, method, namespace)
    timeout = b"\x20" + _varint(timeout_nano) if timeout_nano else b""
    return prefix + _bytes_field(3, bytes(payload)) + timeout + suffix


def id_payload(id: str) -> bytes:
    """The payload of a task API request whose only field set is `id` (field 1): Connect,
    Pids and State of a task (task.proto; an empty exec_id is left out)."""
    return _bytes_field(1, id.encode())


def parse_response(data: bytes) -> bytes:
    """Decode a ttrpc.Response envelope: its payload, or the error its status names."""
    resp = ttrpc_pb2.Response()
    try:
        resp.ParseFromString(data)
    except Exception as err:  # noqa: BLE001 - DecodeError, and anything odd the runtime raises
        raise errors.ProtocolError(f"undecodable ttrpc response: {err}") from None
    if resp.HasField("status") and resp.status.code != 0:
        raise errors.from_grpc_code(resp.status.code, resp.status.message)
    return resp.payload


Recv = Callable[[int], bytes]
"""recv(n): up to n (>= 1) bytes, b"" at end of stream."""


def _read_exact(recv: Recv, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = recv(min(n - len(buf), _READ_CHUNK))
        if not chunk:
            got = f" after {len(buf)} of {n} bytes" if buf else ""
            raise errors.ShimClosed(f"ttrpc: closed (connection ended{got})")
        buf += chunk
    return bytes(buf)


def _discard(recv: Recv, n: int) -> None:
    while n > 0:
        chunk = recv(min(n, _READ_CHUNK))
        if not chunk:
            raise errors.ShimClosed("ttrpc: closed (connection ended in an oversized frame)")
        n -= len(chunk)


def read_frame(recv: Recv) -> tuple[FrameHeader, bytes | None]:
    """Read one frame. For a frame longer than MAX_MESSAGE the data is read and thrown
    away, and None is returned in its place (memory stays bounded)."""
    header = decode_header(_read_exact(recv, HEADER_SIZE))
    if header.length > MAX_MESSAGE:
        _discard(recv, header.length)
        return header, None
    return header, _read_exact(recv, header.length)


def check_response_header(header: FrameHeader, expected: Collection[int]) -> None:
    """A client's next frame must be a Response on a stream it is waiting for."""
    if header.msg_type != MSG_TYPE_RESPONSE:
        raise errors.ProtocolError(
            f"ttrpc: unexpected message type {header.msg_type} on stream {header.stream_id}"
        )
    if header.stream_id not in expected:
        waiting = ", ".join(str(i) for i in sorted(expected))
        raise errors.ProtocolError(
            f"ttrpc: response for stream {header.stream_id}, expected {waiting}"
        )


def read_response(recv: Recv, stream_id: int) -> bytes:
    """Read the Response frame for `stream_id` and return its payload (or raise)."""
    header = decode_header(_read_exact(recv, HEADER_SIZE))
    check_response_header(header, (stream_id,))
    if header.length > MAX_MESSAGE:
        _discard(recv, header.length)
        raise too_large(header.length)
    return parse_response(_read_exact(recv, header.length))
