"""containerd's metadata schema, read from ``<root>/io.containerd.metadata.v1.bolt/meta.db``.

Bucket paths and keys (containerd metadata/buckets.go at v1.6.20 and v1.7.24,
core/metadata/buckets.go at v2.1.9; readContainer in containers.go, sandboxStore.read in
sandbox.go, namespaceStore.List in namespaces.go):

- ``v1`` → ``version``: the schema's minor version, a zig-zag varint (3 on 1.6/1.7, 4 on 2.x).
- ``v1`` → ``<namespace>``: every sub-bucket of ``v1`` is a namespace.
- ``v1`` → ``<ns>`` → ``containers`` → ``<id>``: ``createdat``/``updatedat`` (Go
  time.MarshalBinary), ``image``, ``runtime`` → ``name``, ``labels`` → key → value, and from
  1.7 on ``sandboxid`` (always written, empty when there is none).
- sandboxes: 1.7 keeps them at the top level, ``<ns>`` → ``sandboxes`` → ``<id>``; 2.x
  moved them to ``v1`` → ``<ns>`` → ``sandboxes`` (migration 4, migrateSandboxes). Both are
  read. Fields: timestamps, ``labels``, ``runtime`` → ``name``, 2.x ``sandboxer``.

The whole read happens under the file's shared lock, which is dropped before this returns.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path
from types import MappingProxyType

from shimctl.records.bolt import DEFAULT_TIMEOUT, BoltError, Bucket, open_bolt
from shimctl.records.model import (
    ContainerRecord,
    NamespaceRecords,
    OwnerRecords,
    SandboxRecord,
    Source,
    frozen_map,
)

METADATA_DIR = "io.containerd.metadata.v1.bolt"
METADATA_FILE = "meta.db"
SCHEMA = b"v1"

_GO_TIME = struct.Struct(">qi")
# Seconds from Go's zero time (January 1, year 1, UTC) to the Unix epoch.
_GO_EPOCH_OFFSET = 62135596800


def metadb_path(root: Path) -> Path:
    return root / METADATA_DIR / METADATA_FILE


def go_time(raw: bytes) -> float | None:
    """Unix seconds of a Go ``time.MarshalBinary`` value (version 1 or 2); None if it is not
    one. Layout (Go src/time/time.go, MarshalBinary): version byte, seconds since year 1
    (int64 BE), nanoseconds (int32 BE), zone offset in minutes (int16 BE) [, seconds (v2)]."""
    if len(raw) not in (15, 16) or raw[0] != len(raw) - 14:  # v1: 15 bytes, v2: 16
        return None
    seconds: int
    nanos: int
    seconds, nanos = _GO_TIME.unpack_from(raw, 1)
    if not 0 <= nanos < 1_000_000_000:
        return None
    return float(seconds - _GO_EPOCH_OFFSET) + nanos / 1e9


def zigzag_varint(raw: bytes) -> int | None:
    """Go's binary.Varint (zig-zag) of the whole value, None if it is not one."""
    value = shift = 0
    for i, byte in enumerate(raw):
        if i >= 10:
            return None
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i != len(raw) - 1:
                return None
            return (value >> 1) ^ -(value & 1)
    return None


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _strings(bucket: Bucket | None) -> dict[str, str]:
    if bucket is None:
        return {}
    return {_text(k): _text(v) for k, v in bucket.values().items()}


def _runtime_name(bucket: Bucket | None) -> str:
    return _text(bucket.values().get(b"name")) if bucket is not None else ""


def read_container(key: bytes, bucket: Bucket) -> ContainerRecord:
    values, subs = bucket.split()
    return ContainerRecord(
        id=_text(key),
        runtime=_runtime_name(subs.get(b"runtime")),
        labels=MappingProxyType(_strings(subs.get(b"labels"))),
        sandbox_id=_text(values.get(b"sandboxid")),
        image=_text(values.get(b"image")),
        created_at=go_time(values.get(b"createdat", b"")),
        updated_at=go_time(values.get(b"updatedat", b"")),
    )


def read_sandbox(key: bytes, bucket: Bucket) -> SandboxRecord:
    values, subs = bucket.split()
    return SandboxRecord(
        id=_text(key),
        runtime=_runtime_name(subs.get(b"runtime")),
        sandboxer=_text(values.get(b"sandboxer")),
        labels=MappingProxyType(_strings(subs.get(b"labels"))),
        created_at=go_time(values.get(b"createdat", b"")),
        updated_at=go_time(values.get(b"updatedat", b"")),
    )


def _records(bucket: Bucket | None) -> list[tuple[bytes, Bucket]]:
    if bucket is None:
        return []
    return [(k, v) for k, v in bucket.items() if isinstance(v, Bucket)]


def read_tree(root: Bucket) -> tuple[dict[str, NamespaceRecords], int | None]:
    """(namespaces, schema version) of an open meta.db."""
    top = root.buckets()
    schema = top.get(SCHEMA)
    namespaces: dict[str, dict[str, Bucket | None]] = {}
    version: int | None = None
    if schema is not None:
        for key, value in schema.items():
            if isinstance(value, Bucket):
                ns = value.buckets()
                namespaces[_text(key)] = {
                    "containers": ns.get(b"containers"),
                    "sandboxes": ns.get(b"sandboxes"),
                }
            elif key == b"version":
                version = zigzag_varint(value)
    # 1.7's sandbox store lives at the top level, beside v1 (a namespace can't be "v1" there).
    legacy: dict[str, Bucket] = {}
    for key, value in top.items():
        if key != SCHEMA and isinstance(value, Bucket):
            store = value.bucket(b"sandboxes")
            if store is not None:
                legacy[_text(key)] = store
    result: dict[str, NamespaceRecords] = {}
    for name in sorted(set(namespaces) | set(legacy)):
        parts = namespaces.get(name, {})
        containers = {
            c.id: c for c in (read_container(k, b) for k, b in _records(parts.get("containers")))
        }
        sandboxes: dict[str, SandboxRecord] = {}
        for source in (legacy.get(name), parts.get("sandboxes")):
            for k, b in _records(source):
                record = read_sandbox(k, b)
                sandboxes[record.id] = record
        result[name] = NamespaceRecords(
            name, containers=frozen_map(containers), sandboxes=frozen_map(sandboxes)
        )
    return result, version


def _open_dir(name: str, dir_fd: int | None) -> int:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if dir_fd is not None:
        flags |= os.O_NOFOLLOW
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BoltError("missing", f"{name} does not exist") from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BoltError("unsafe", f"{name} is not a directory (a symlink?)") from None
        raise BoltError("unreadable", f"cannot open {name}: {err.strerror}") from None


def read_metadb(root: Path, *, timeout: float = DEFAULT_TIMEOUT) -> OwnerRecords:
    """Read containerd's records from its stopped meta.db. Raises BoltError (missing, locked,
    unsafe, unreadable, corrupt, too-large); nothing else escapes. ``root`` itself may be a
    symlink (as /var/lib/containerd often is); nothing below it is followed."""
    root_fd = _open_dir(str(root), None)
    try:
        dir_fd = _open_dir(METADATA_DIR, root_fd)
        try:
            with open_bolt(METADATA_FILE, dir_fd=dir_fd, timeout=timeout) as db:
                namespaces, version = read_tree(db.root)
        finally:
            os.close(dir_fd)
    finally:
        os.close(root_fd)
    return OwnerRecords(
        Source.METADB,
        namespaces=frozen_map(namespaces),
        # The file is the whole truth: no store (1.6) or an empty one means no sandboxes.
        sandboxes_known=True,
        schema_version=version,
    )
