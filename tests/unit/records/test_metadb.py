"""containerd's metadata schema on files laid out as containerd 1.6, 1.7 and 2.x lay them
out (bucket paths from containerd's metadata/buckets.go; the values' encodings are checked
against real files in tests/real/test_records.py)."""

from __future__ import annotations

import datetime
import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shimctl.records.bolt import BoltError
from shimctl.records.metadb import (
    METADATA_DIR,
    METADATA_FILE,
    go_time,
    read_metadb,
    zigzag_varint,
)
from shimctl.records.model import Source
from tests.unit.records.boltwriter import Tree, build

GO_EPOCH = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)


def go_binary(when: datetime.datetime, version: int = 1) -> bytes:
    """Go time.MarshalBinary of a UTC time (offset -1 = UTC)."""
    delta = when - GO_EPOCH
    seconds = delta.days * 86400 + delta.seconds
    out = struct.pack(">Bqih", version, seconds, delta.microseconds * 1000, -1)
    return out if version == 1 else out + b"\0"  # v2 adds the offset's seconds


def container(runtime: bytes, *, labels: Tree | None = None, sandbox: bytes | None = None) -> Tree:
    record: Tree = {
        b"createdat": go_binary(
            datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.UTC)
        ),
        b"updatedat": go_binary(datetime.datetime(2026, 1, 2, 3, 4, 6, tzinfo=datetime.UTC)),
        b"image": b"docker.io/library/busybox:latest",
        b"snapshotKey": b"",
        b"snapshotter": b"overlayfs",
        b"spec": b"\n6types.containerd.io/opencontainers/runtime-spec/1/Spec\x12\x02{}",
        b"runtime": {b"name": runtime, b"options": b"\n\x1acontainerd.runc.v1.Options"},
    }
    if labels is not None:
        record[b"labels"] = labels
    if sandbox is not None:
        record[b"sandboxid"] = sandbox
    return record


def sandbox(runtime: bytes, sandboxer: bytes | None = None) -> Tree:
    record: Tree = {
        b"createdat": go_binary(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
        b"updatedat": go_binary(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
        b"labels": {b"io.cri-containerd.kind": b"sandbox"},
        b"runtime": {b"name": runtime},
    }
    if sandboxer is not None:
        record[b"sandboxer"] = sandboxer
    return record


def root_with(tmp_path: Path, tree: Tree) -> Path:
    root = tmp_path / "root"
    (root / METADATA_DIR).mkdir(parents=True)
    (root / METADATA_DIR / METADATA_FILE).write_bytes(build(tree))
    return root


def test_go_time() -> None:
    # Bytes of a real record written by containerd 1.6.20 (its createdat).
    real = b"\x01\x00\x00\x00\x0e\xe2\xa12\xfe\x06\x86XF\xff\xff"
    seconds = int.from_bytes(real[1:9], "big") - 62135596800
    assert go_time(real) == pytest.approx(seconds + int.from_bytes(real[9:13], "big") / 1e9)
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.UTC)
    assert go_time(go_binary(when)) == pytest.approx(when.timestamp())
    assert go_time(go_binary(when, version=2)) == pytest.approx(when.timestamp())
    for bad in (b"", b"\x01" * 14, b"\x03" + b"\0" * 14, b"\x02" + b"\0" * 14, real + b"\0"):
        assert go_time(bad) is None


def test_zigzag_varint() -> None:
    assert zigzag_varint(b"\x06") == 3
    assert zigzag_varint(b"\x08") == 4
    assert zigzag_varint(b"\x01") == -1
    assert zigzag_varint(b"\xac\x02") == 150
    for bad in (b"", b"\x80", b"\x06\x06", b"\xff" * 11):
        assert zigzag_varint(bad) is None


def test_containerd_16_layout(tmp_path: Path) -> None:
    root = root_with(
        tmp_path,
        {
            b"v1": {
                b"version": b"\x06",
                b"default": {
                    b"containers": {
                        b"web": container(b"io.containerd.runc.v2", labels={b"app": b"web"}),
                        b"job": container(b"/opt/bin/containerd-shim-custom-v2"),
                    },
                    b"leases": {},
                    b"labels": {b"ns-label": b"x"},
                },
                b"k8s.io": {b"images": {b"busybox": {b"target": {}}}},
            }
        },
    )
    records = read_metadb(root)
    assert records.source is Source.METADB and records.known
    assert records.schema_version == 3
    assert sorted(records.namespaces) == ["default", "k8s.io"]
    web = records.namespace("default").containers["web"]
    assert web.runtime == "io.containerd.runc.v2"
    assert dict(web.labels) == {"app": "web"}
    assert web.sandbox_id == ""
    assert web.image == "docker.io/library/busybox:latest"
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=datetime.UTC).timestamp()
    assert web.created_at == pytest.approx(created)
    assert web.updated_at == pytest.approx(created + 0.4)
    job = records.namespace("default").containers["job"]
    assert job.runtime == "/opt/bin/containerd-shim-custom-v2" and dict(job.labels) == {}
    assert records.namespace("k8s.io").containers == {}
    assert records.namespace("nowhere").containers == {}
    assert not records.tasks_known and records.sandboxes_known


def test_containerd_17_sandboxes_at_top_level(tmp_path: Path) -> None:
    root = root_with(
        tmp_path,
        {
            b"v1": {
                b"version": b"\x06",
                b"k8s.io": {
                    b"containers": {
                        b"app": container(
                            b"io.containerd.runc.v2",
                            labels={b"io.cri-containerd.kind": b"container"},
                            sandbox=b"pod1",
                        ),
                    }
                },
            },
            b"k8s.io": {b"sandboxes": {b"pod1": sandbox(b"io.containerd.runc.v2")}},
        },
    )
    ns = read_metadb(root).namespace("k8s.io")
    assert ns.containers["app"].sandbox_id == "pod1"
    assert dict(ns.containers["app"].labels) == {"io.cri-containerd.kind": "container"}
    pod = ns.sandboxes["pod1"]
    assert pod.runtime == "io.containerd.runc.v2" and pod.sandboxer == ""
    assert dict(pod.labels) == {"io.cri-containerd.kind": "sandbox"}


def test_containerd_2x_sandboxes_under_v1(tmp_path: Path) -> None:
    root = root_with(
        tmp_path,
        {
            b"v1": {
                b"version": b"\x08",
                b"default": {
                    b"containers": {b"c": container(b"io.containerd.runc.v2", sandbox=b"")},
                    b"sandboxes": {b"sb": sandbox(b"io.containerd.runc.v2", b"shim")},
                },
            }
        },
    )
    records = read_metadb(root)
    assert records.schema_version == 4
    ns = records.namespace("default")
    assert ns.sandboxes["sb"].sandboxer == "shim"
    assert ns.containers["c"].sandbox_id == ""


def test_empty_and_foreign_databases(tmp_path: Path) -> None:
    assert read_metadb(root_with(tmp_path / "a", {})).namespaces == {}
    foreign = read_metadb(root_with(tmp_path / "b", {b"other": {b"x": b"y"}}))
    assert foreign.namespaces == {} and foreign.schema_version is None


def test_odd_values_are_not_errors(tmp_path: Path) -> None:
    """A record with odd fields still exists: its fields are blank, the record stays."""
    odd: Tree = {
        b"createdat": b"garbage",
        b"runtime": b"not a bucket",
        b"labels": {b"\xff": b"\xfe"},
    }
    root = root_with(tmp_path, {b"v1": {b"default": {b"containers": {b"odd": odd}}}})
    record = read_metadb(root).namespace("default").containers["odd"]
    assert record.created_at is None and record.runtime == ""
    assert dict(record.labels) == {"\ufffd": "\ufffd"}


def test_symlinks_below_root_are_not_followed(tmp_path: Path) -> None:
    real = root_with(tmp_path / "elsewhere", {b"v1": {b"default": {}}})
    root = tmp_path / "root"
    root.mkdir()
    (root / METADATA_DIR).symlink_to(real / METADATA_DIR)
    with pytest.raises(BoltError) as err:
        read_metadb(root)
    assert err.value.kind == "unsafe"
    (root / METADATA_DIR).unlink()
    (root / METADATA_DIR).mkdir()
    (root / METADATA_DIR / METADATA_FILE).symlink_to(real / METADATA_DIR / METADATA_FILE)
    with pytest.raises(BoltError) as err:
        read_metadb(root)
    assert err.value.kind == "unsafe"
    # The root itself may be a symlink (/var/lib/containerd often is).
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    assert sorted(read_metadb(alias).namespaces) == ["default"]


def test_missing(tmp_path: Path) -> None:
    for root in (tmp_path / "none", tmp_path):
        with pytest.raises(BoltError) as err:
            read_metadb(root)
        assert err.value.kind == "missing"
    (tmp_path / METADATA_DIR).mkdir()
    with pytest.raises(BoltError) as err:
        read_metadb(tmp_path)
    assert err.value.kind == "missing"
    assert os.listdir(tmp_path / METADATA_DIR) == []


def _layout(count: int) -> Tree:
    return {
        b"v1": {
            b"version": b"\x08",
            b"default": {
                b"containers": {
                    f"c{i:03d}".encode(): container(
                        b"io.containerd.runc.v2", labels={b"n": str(i).encode()}, sandbox=b""
                    )
                    for i in range(count)
                },
                b"sandboxes": {b"sb": sandbox(b"io.containerd.runc.v2", b"shim")},
            },
        },
        b"default": {b"sandboxes": {b"old": sandbox(b"io.containerd.runc.v2")}},
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), max_size=6))
def test_flipped_databases_give_records_or_bolt_errors(flips: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / METADATA_DIR).mkdir()
        data = bytearray(build(_layout(40)))
        for offset, mask in flips:
            data[offset % len(data)] ^= mask
        (root / METADATA_DIR / METADATA_FILE).write_bytes(bytes(data))
        try:
            records = read_metadb(root)
        except BoltError as err:
            assert err.kind in ("corrupt", "too-large")
            return
        assert records.source is Source.METADB
        if not flips:
            ns = records.namespace("default")
            assert len(ns.containers) == 40 and sorted(ns.sandboxes) == ["old", "sb"]
