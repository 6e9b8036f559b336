"""The read-only bbolt reader on files of known content (tests/unit/records/boltwriter.py) and
on hostile ones: every malformation is a BoltError, never another exception or a hang, and the
file is only ever read under a shared lock that is gone when the read is."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shimctl.records import bolt
from shimctl.records.bolt import BoltError, Bucket, open_bolt
from tests.unit.records.boltwriter import Tree, build

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> settings:
    return settings(
        max_examples=max(default, FUZZ_EXAMPLES),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


def as_tree(bucket: Bucket) -> Tree:
    return {k: as_tree(v) if isinstance(v, Bucket) else v for k, v in bucket.items()}


def read_all(path: Path, **limits: float) -> Tree:
    with open_bolt(str(path), **limits) as db:  # type: ignore[arg-type]
        return as_tree(db.root)


def sample_tree(containers: int = 40, spec: int = 300) -> Tree:
    return {
        b"v1": {
            b"version": b"\x06",
            b"default": {
                b"containers": {
                    f"c{i:04d}".encode(): {
                        b"createdat": b"t" * 15,
                        b"spec": bytes([i % 251]) * (spec if i != 7 else 9000),
                        b"labels": {b"k": str(i).encode()},
                        b"runtime": {b"name": b"io.containerd.runc.v2"},
                    }
                    for i in range(containers)
                }
            },
        }
    }


def write(tmp_path: Path, data: bytes, name: str = "meta.db") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def page_header(data: bytes, pgid: int, page_size: int = 4096) -> tuple[int, int, int, int]:
    return struct.unpack_from("<QHHI", data, pgid * page_size)


def branch_pages(data: bytes, page_size: int = 4096) -> list[int]:
    return [
        pgid
        for pgid in range(2, len(data) // page_size)
        if page_header(data, pgid, page_size)[:2] == (pgid, bolt.BRANCH_PAGE)
    ]


# -- reading what was written -----------------------------------------------------------------

keys = st.binary(min_size=1, max_size=24)
values = st.binary(max_size=600)
trees: st.SearchStrategy[Tree] = st.recursive(
    st.dictionaries(keys, values, max_size=6),
    lambda children: st.dictionaries(keys, st.one_of(values, children), max_size=8),
    max_leaves=60,
)


@fuzz(150)
@given(tree=trees, page_size=st.sampled_from([1024, 4096]), fan=st.integers(2, 50))
def test_any_tree_reads_back(tmp_path: Path, tree: Tree, page_size: int, fan: int) -> None:
    path = write(tmp_path, build(tree, page_size=page_size, max_elements=fan))
    assert read_all(path) == tree


def test_branches_inline_buckets_and_overflow(tmp_path: Path) -> None:
    tree = sample_tree(containers=300)
    data = build(tree, max_elements=7)
    assert branch_pages(data), "the writer made no branch page: the test would prove nothing"
    assert any(page_header(data, p)[3] for p in range(3, len(data) // 4096)), "no overflow page"
    path = write(tmp_path, data)
    assert read_all(path) == tree
    with open_bolt(str(path)) as db:
        containers = db.root.bucket(b"v1").bucket(b"default").bucket(b"containers")  # type: ignore[union-attr]
        assert containers is not None and containers.inline is None
        first = containers.items()[0][1]
        assert isinstance(first, Bucket)
        assert first.bucket(b"labels").inline is not None  # type: ignore[union-attr]


def test_meta_with_the_higher_valid_txid_is_used(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree()))
    # meta1 gets the higher txid and a root beyond the high-water mark: used, it fails.
    fields = list(struct.unpack_from("<IIIIQQQQQ", data, 4096 + 16))
    fields[4], fields[8] = 10_000, 99
    packed = struct.pack("<IIIIQQQQQ", *fields)
    data[4096 + 16 : 4096 + 16 + len(packed) + 8] = packed + struct.pack("<Q", bolt.fnv1a64(packed))
    path = write(tmp_path, bytes(data))
    with pytest.raises(BoltError) as err:
        read_all(path)
    assert err.value.kind == "corrupt" and "root page 10000" in err.value.message
    # Its checksum broken, meta1 is ignored and meta0 (lower txid) reads the file.
    data[4096 + 16 + 8] ^= 0xFF
    path.write_bytes(bytes(data))
    assert read_all(path) == sample_tree()


def test_meta0_broken_meta1_is_found_by_probing(tmp_path: Path) -> None:
    tree: Tree = {b"a": {b"b": b"c" * 500}, b"d": b"e"}
    data = bytearray(build(tree, page_size=1024))
    data[16] ^= 0xFF  # magic of meta0
    path = write(tmp_path, bytes(data))
    assert read_all(path) == tree


def test_both_metas_broken(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree()))
    data[16 + 56] ^= 1  # checksum of meta0
    data[4096 + 16 + 4] = 3  # version of meta1
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert err.value.kind == "corrupt" and "meta" in err.value.message


# -- hostile files ------------------------------------------------------------------------------


def test_truncated_anywhere(tmp_path: Path) -> None:
    data = build(sample_tree(containers=120), max_elements=9)
    for length in [*range(0, 64, 7), 4096, 8192, 8300, *range(12288, len(data), 3001)]:
        path = write(tmp_path, data[:length])
        with pytest.raises(BoltError) as err:
            read_all(path)
        assert err.value.kind == "corrupt", (length, err.value)


@fuzz(200)
@given(data=st.binary(max_size=20_000))
def test_random_bytes(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    with pytest.raises(BoltError):
        read_all(path)


@fuzz(300)
@given(flips=st.lists(st.tuples(st.integers(3 * 4096, 40 * 4096), st.integers(1, 255)), max_size=8))
def test_garbage_pages_under_valid_metas(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(build(sample_tree(containers=60), max_elements=5))
    for offset, mask in flips:
        if offset < len(data):
            data[offset] ^= mask
    path = write(tmp_path, bytes(data))
    start = time.monotonic()
    with contextlib.suppress(BoltError):  # a flip may land where it changes nothing
        read_all(path)
    assert time.monotonic() - start < 2


def test_page_cycle(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree(containers=200), max_elements=4))
    parents = branch_pages(bytes(data))
    # The first child of a branch page points back at that page.
    target = parents[-1]
    struct.pack_into("<Q", data, target * 4096 + 16 + 8, target)
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert err.value.kind == "corrupt" and "twice" in err.value.message


def test_shared_subtree_is_refused_not_walked_twice(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree(containers=200), max_elements=4))
    root = branch_pages(bytes(data))[-1]
    _, _, count, _ = page_header(bytes(data), root)
    assert count >= 2
    first_child = struct.unpack_from("<Q", data, root * 4096 + 16 + 8)[0]
    for i in range(1, count):  # every child is the first one: a DAG, exponential if followed
        struct.pack_into("<Q", data, root * 4096 + 16 + 16 * i + 8, first_child)
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert "twice" in err.value.message


def test_deep_chain_of_branch_pages(tmp_path: Path) -> None:
    """50 branch pages, each the only child of the one before: refused by depth."""
    data = bytearray(build({b"k": b"v"}))
    ps, base = 4096, len(data) // 4096
    for i in range(50):
        pgid = base + i
        page = struct.pack("<QHHI", pgid, bolt.BRANCH_PAGE, 1, 0) + struct.pack(
            "<IIQ", 16, 1, pgid + 1
        )
        data += (page + b"k").ljust(ps, b"\0")
    data += (struct.pack("<QHHI", base + 50, bolt.LEAF_PAGE, 0, 0)).ljust(ps, b"\0")
    high_water = base + 51
    for meta in (0, 1):
        fields = list(struct.unpack_from("<IIIIQQQQQ", data, meta * ps + 16))
        fields[4], fields[7] = base, high_water
        packed = struct.pack("<IIIIQQQQQ", *fields)
        data[meta * ps + 16 : meta * ps + 16 + 64] = packed + struct.pack(
            "<Q", bolt.fnv1a64(packed)
        )
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert "deeper" in err.value.message


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (lambda h: (h[0] + 1, *h[1:]), "names itself"),
        (lambda h: (h[0], 0x08, *h[2:]), "flags"),
        (lambda h: (h[0], h[1], h[2], 1 << 30), "overflows"),
        (lambda h: (h[0], h[1], 60_000, h[3]), "do not fit"),
    ],
)
def test_bad_page_headers(tmp_path: Path, patch: object, message: str) -> None:
    data = bytearray(build(sample_tree()))
    root = struct.unpack_from("<Q", data, 16 + 16)[0]
    header = page_header(bytes(data), root)
    struct.pack_into("<QHHI", data, root * 4096, *patch(header))  # type: ignore[operator]
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert err.value.kind == "corrupt" and message in err.value.message


def test_page_id_out_of_range(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree(containers=200), max_elements=4))
    root = branch_pages(bytes(data))[-1]
    struct.pack_into("<Q", data, root * 4096 + 16 + 8, 1 << 40)
    with pytest.raises(BoltError) as err:
        read_all(write(tmp_path, bytes(data)))
    assert "outside" in err.value.message


def test_huge_sparse_file_is_read_only_where_needed(tmp_path: Path) -> None:
    tree = sample_tree()
    path = write(tmp_path, build(tree))
    os.truncate(path, 1 << 40)  # 1 TiB, sparse
    start = time.monotonic()
    assert read_all(path) == tree
    assert time.monotonic() - start < 1
    zeros = tmp_path / "zeros.db"
    zeros.touch()
    os.truncate(zeros, 1 << 40)
    with pytest.raises(BoltError) as err:
        read_all(zeros)
    assert err.value.kind == "corrupt"


def test_budgets(tmp_path: Path) -> None:
    path = write(tmp_path, build(sample_tree(containers=100)))
    with pytest.raises(BoltError) as err:
        read_all(path, max_elements=50)
    assert err.value.kind == "too-large"
    with pytest.raises(BoltError) as err:
        read_all(path, max_bytes=3 * 4096)
    assert err.value.kind == "too-large"
    with pytest.raises(BoltError) as err:
        read_all(path, timeout=-1)
    assert err.value.kind == "too-large"


# -- opening ------------------------------------------------------------------------------------


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(BoltError) as err, open_bolt(str(tmp_path / "meta.db")):
        pass
    assert err.value.kind == "missing"
    assert list(tmp_path.iterdir()) == []


def test_symlink_and_fifo_are_refused(tmp_path: Path) -> None:
    outside = write(tmp_path, build({b"a": b"b"}), "outside.db")
    link = tmp_path / "meta.db"
    link.symlink_to(outside)
    with pytest.raises(BoltError) as err, open_bolt(str(link)):
        pass
    assert err.value.kind == "unsafe"
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(BoltError) as err, open_bolt(str(fifo)):
        pass
    assert err.value.kind == "unsafe" and time.monotonic() - start < 1


def test_reads_under_a_shared_lock_released_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, build(sample_tree()))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    mtime = path.stat().st_mtime_ns
    with open_bolt(str(path)) as db, path.open("rb") as other:
        as_tree(db.root)
        with pytest.raises(BlockingIOError):  # containerd's LOCK_EX would have to wait
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another reader does not
        fcntl.flock(other, fcntl.LOCK_UN)
        flags = int(Path(f"/proc/self/fdinfo/{db.fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
    with path.open("rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released: no wait
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_mtime_ns == mtime


def test_lock_on_error_paths_is_released(tmp_path: Path) -> None:
    data = bytearray(build(sample_tree()))
    root = struct.unpack_from("<Q", data, 32)[0]
    data[root * 4096 + 8] = 0x77
    path = write(tmp_path, bytes(data))
    with pytest.raises(BoltError):
        read_all(path)
    with path.open("rb") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


HOLDER = """
import fcntl, sys, time
f = open(sys.argv[1], "rb")
fcntl.flock(f, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_locked_exclusively_returns_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, build(sample_tree()))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        start = time.monotonic()
        with pytest.raises(BoltError) as err, open_bolt(str(path)):
            pass
        elapsed = time.monotonic() - start
        assert err.value.kind == "locked"
        assert elapsed < 0.05, elapsed
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    assert read_all(path) == sample_tree()
