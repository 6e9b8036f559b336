"""A small, strictly read-only reader of bbolt database files (containerd's meta.db).

Hand-written because PyPI has no maintained read-only bbolt reader: the one there opens the
file read-write, creates it when it is missing and locks it with lockf(3), which containerd's
flock(2) lock ignores. This one opens the file O_RDONLY|O_NOFOLLOW, takes a *non-blocking*
shared flock (containerd holds LOCK_EX for as long as it runs, and its own start waits for the
lock with no timeout, so shimctl must never hold it for longer than one quick read), reads
pages with pread (no mmap: a file shrunk under a mapping would raise SIGBUS) and drops the
lock as soon as the caller's read is done.

On-disk format (go.etcd.io/bbolt, internal/common/page.go, meta.go, bucket.go and db.go at
https://github.com/etcd-io/bbolt/tree/4e65d8f), little-endian as written on x86-64/arm64:

- every page starts with a 16-byte header: id u64, flags u16, count u16, overflow u32; a page
  with ``overflow`` n spans n + 1 pages. Flags: branch 0x01, leaf 0x02, meta 0x04.
- pages 0 and 1 are meta pages: magic 0xED0CDAED, version 2, page size, flags, the root
  bucket (root page id, sequence), freelist page id, high-water page id, txid, and an FNV-1a
  64 checksum of the meta fields before it. The valid meta with the higher txid is current.
- a branch page holds ``count`` 16-byte elements (pos u32, ksize u32, child page id u64), a
  leaf page ``count`` 16-byte elements (flags u32, pos u32, ksize u32, vsize u32); ``pos`` is
  counted from the element itself. A leaf element with flag 0x01 is a sub-bucket: its value
  is a 16-byte bucket header (root page id, sequence) and, when the root is 0, the bucket's
  only (leaf) page follows inline in the value.

A hostile or truncated file can only raise :class:`BoltError`: every page id is checked against
the high-water mark and the file size, a page must name itself, descents are depth-limited and
never revisit a page, and the bytes read, the elements visited and the time taken are capped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

MAGIC = 0xED0CDAED
VERSION = 2
BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
BUCKET_LEAF_FLAG = 0x01

PAGE_HEADER = struct.Struct("<QHHI")  # id, flags, count, overflow
BRANCH_ELEMENT = struct.Struct("<IIQ")  # pos, ksize, pgid
LEAF_ELEMENT = struct.Struct("<IIII")  # flags, pos, ksize, vsize
BUCKET_HEADER = struct.Struct("<QQ")  # root pgid, sequence
# magic, version, page size, flags, root pgid, root sequence, freelist, high water, txid, sum
META = struct.Struct("<IIIIQQQQQQ")
META_SUMMED = META.size - 8  # the checksum covers every field before it

# bbolt itself probes meta page 1 at 1 KiB .. 16 MiB (db.go getPageSizeFromSecondMeta); a page
# bigger than this reader's cap is refused rather than read.
MIN_PAGE_SIZE = 1024
MAX_PAGE_SIZE = 1 << 16
#: B+tree depth of any real file is < 10 (fan-out of hundreds per page).
MAX_DEPTH = 32
#: One page with its overflow: a container's OCI spec is a few KiB, 16 MiB is generous.
MAX_SPAN = 16 << 20
#: Defaults for one read: bytes read from the file, elements visited, seconds taken.
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_MAX_ELEMENTS = 2_000_000
DEFAULT_TIMEOUT = 5.0

ErrorKind = Literal["missing", "locked", "unsafe", "unreadable", "corrupt", "too-large"]

# A module-level alias, so a test can slow reads down to hold the lock for a known time.
_pread = os.pread


class BoltError(Exception):
    """Why a bbolt file could not be read; ``kind`` says which way it failed."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 (Go's hash/fnv New64a), bbolt's meta checksum."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@dataclass(frozen=True, slots=True)
class Meta:
    page_size: int
    root: int
    high_water: int
    txid: int


def parse_meta(buf: bytes) -> Meta | None:
    """The meta of a meta page's bytes, None if it is not a valid one."""
    if len(buf) < PAGE_HEADER.size + META.size:
        return None
    _, flags, _, _ = PAGE_HEADER.unpack_from(buf, 0)
    fields = META.unpack_from(buf, PAGE_HEADER.size)
    magic, version, page_size, _, root, _, _, high_water, txid, checksum = fields
    summed = buf[PAGE_HEADER.size : PAGE_HEADER.size + META_SUMMED]
    if flags != META_PAGE or magic != MAGIC or version != VERSION:
        return None
    if checksum != fnv1a64(summed):
        return None
    return Meta(page_size=page_size, root=root, high_water=high_water, txid=txid)


@dataclass(slots=True)
class _Budget:
    max_bytes: int
    max_elements: int
    deadline: float
    read: int = 0
    elements: int = 0

    def charge_bytes(self, n: int) -> None:
        self.read += n
        if self.read > self.max_bytes:
            raise BoltError("too-large", f"read more than {self.max_bytes} bytes")
        if time.monotonic() > self.deadline:
            raise BoltError("too-large", "the read took longer than its deadline")

    def charge_elements(self, n: int) -> None:
        self.elements += n
        if self.elements > self.max_elements:
            raise BoltError("too-large", f"visited more than {self.max_elements} elements")


class _Page(NamedTuple):
    """One page (with its overflow) or an inline bucket page: its bytes and parsed header."""

    buf: bytes
    flags: int
    elements: int

    def check_elements(self) -> None:
        if PAGE_HEADER.size + self.elements * LEAF_ELEMENT.size > len(self.buf):
            raise BoltError("corrupt", f"{self.elements} elements do not fit in their page")


@dataclass(slots=True)
class BoltFile:
    """An open, shared-locked bbolt file. Use :func:`open_bolt`; read through :attr:`root`."""

    fd: int
    size: int
    meta: Meta
    budget: _Budget
    _pages: dict[int, _Page] = field(default_factory=dict)

    @property
    def root(self) -> Bucket:
        return Bucket(self, self.meta.root, None)

    def page(self, pgid: int) -> _Page:
        cached = self._pages.get(pgid)
        if cached is not None:
            return cached
        ps = self.meta.page_size
        if pgid < 2 or pgid >= self.meta.high_water:
            raise BoltError("corrupt", f"page id {pgid} is outside 2..{self.meta.high_water - 1}")
        head = self._read(pgid * ps, ps)
        page_id, flags, count, overflow = PAGE_HEADER.unpack_from(head, 0)
        if page_id != pgid:
            raise BoltError("corrupt", f"page {pgid} names itself {page_id}")
        if flags not in (BRANCH_PAGE, LEAF_PAGE):
            raise BoltError("corrupt", f"page {pgid} has flags {flags:#x}, not branch or leaf")
        if overflow:
            span = (overflow + 1) * ps
            if pgid + overflow >= self.meta.high_water or span > MAX_SPAN:
                raise BoltError("corrupt", f"page {pgid} overflows by {overflow} pages")
            head += self._read((pgid + 1) * ps, overflow * ps)
        page = _Page(head, flags, count)
        page.check_elements()
        self._pages[pgid] = page
        return page

    def _read(self, offset: int, size: int) -> bytes:
        if offset + size > self.size:
            raise BoltError("corrupt", f"the file ends before byte {offset + size} (truncated)")
        self.budget.charge_bytes(size)
        try:
            data = _pread(self.fd, size, offset)
        except OSError as err:
            raise BoltError("unreadable", f"read at {offset}: {err.strerror}") from None
        if len(data) != size:
            raise BoltError("corrupt", f"short read at {offset} (the file shrank)")
        return data


class Bucket(NamedTuple):
    """A bucket of the open file: a page tree (``root`` > 0) or one inline leaf page.
    (A NamedTuple, not a frozen dataclass: thousands are made per read, and it is cheaper.)"""

    file: BoltFile
    root: int
    inline: bytes | None

    def items(self) -> list[tuple[bytes, bytes | Bucket]]:
        """Every key in order, with its value or (a sub-bucket) a :class:`Bucket`. Read
        whole (a list, not a generator: the read is short and this is its hot path)."""
        out: list[tuple[bytes, bytes | Bucket]] = []
        if self.inline is not None:
            self._leaf_items(self._inline_page(), out)
        else:
            self._walk(self.root, 0, set(), out)
        return out

    def split(self) -> tuple[dict[bytes, bytes], dict[bytes, Bucket]]:
        """(plain values, sub-buckets) of this bucket, in one pass."""
        values: dict[bytes, bytes] = {}
        subs: dict[bytes, Bucket] = {}
        for k, v in self.items():
            if type(v) is bytes:
                values[k] = v
            else:
                subs[k] = v  # type: ignore[assignment]
        return values, subs

    def values(self) -> dict[bytes, bytes]:
        """The plain (non-bucket) values of this bucket."""
        return self.split()[0]

    def buckets(self) -> dict[bytes, Bucket]:
        """The sub-buckets of this bucket (not yet read)."""
        return self.split()[1]

    def bucket(self, key: bytes) -> Bucket | None:
        return self.split()[1].get(key)

    def _inline_page(self) -> _Page:
        buf = self.inline or b""
        if len(buf) < PAGE_HEADER.size:
            raise BoltError("corrupt", "an inline bucket is shorter than a page header")
        _, flags, count, _ = PAGE_HEADER.unpack_from(buf, 0)
        if flags != LEAF_PAGE:
            raise BoltError("corrupt", f"an inline bucket page has flags {flags:#x}, not leaf")
        page = _Page(buf, flags, count)
        page.check_elements()
        return page

    def _walk(
        self, pgid: int, depth: int, seen: set[int], out: list[tuple[bytes, bytes | Bucket]]
    ) -> None:
        if depth > MAX_DEPTH:
            raise BoltError("corrupt", f"the page tree is deeper than {MAX_DEPTH}")
        if pgid in seen:
            raise BoltError("corrupt", f"page {pgid} is reached twice (a cycle)")
        seen.add(pgid)
        page = self.file.page(pgid)
        if page.flags == LEAF_PAGE:
            self._leaf_items(page, out)
            return
        self.file.budget.charge_elements(page.elements)
        end = PAGE_HEADER.size + page.elements * BRANCH_ELEMENT.size
        for _, _, child in BRANCH_ELEMENT.iter_unpack(page.buf[PAGE_HEADER.size : end]):
            self._walk(child, depth + 1, seen, out)

    def _leaf_items(self, page: _Page, out: list[tuple[bytes, bytes | Bucket]]) -> None:
        self.file.budget.charge_elements(page.elements)
        buf = page.buf
        limit = len(buf)
        end = PAGE_HEADER.size + page.elements * LEAF_ELEMENT.size
        offset = PAGE_HEADER.size
        append = out.append
        for flags, pos, ksize, vsize in LEAF_ELEMENT.iter_unpack(buf[PAGE_HEADER.size : end]):
            start = offset + pos
            key_end = start + ksize
            value_end = key_end + vsize
            offset += 16  # LEAF_ELEMENT.size
            if value_end > limit:
                raise BoltError("corrupt", "a key or value runs past the end of its page")
            if flags & BUCKET_LEAF_FLAG:
                append((buf[start:key_end], self._sub_bucket(buf[key_end:value_end])))
            else:
                append((buf[start:key_end], buf[key_end:value_end]))

    def _sub_bucket(self, value: bytes) -> Bucket:
        if len(value) < BUCKET_HEADER.size:
            raise BoltError("corrupt", "a bucket value is shorter than a bucket header")
        root, _ = BUCKET_HEADER.unpack_from(value, 0)
        if root == 0:
            return Bucket(self.file, 0, value[BUCKET_HEADER.size :])
        return Bucket(self.file, root, None)


def _choose_meta(fd: int, size: int) -> Meta:
    """The current meta: the valid one of pages 0 and 1 with the higher txid (db.go meta())."""
    first = _pread(fd, min(size, 0x1000), 0)
    meta0 = parse_meta(first)
    offsets = (
        [meta0.page_size]
        if meta0 is not None
        else [MIN_PAGE_SIZE << i for i in range(15) if MIN_PAGE_SIZE << i < size]
    )
    meta1 = None
    for offset in offsets:
        meta1 = parse_meta(_pread(fd, 0x1000, offset))
        if meta1 is not None and meta1.page_size == offset:
            break
        meta1 = None
    valid = [m for m in (meta0, meta1) if m is not None]
    if not valid:
        raise BoltError("corrupt", "neither meta page is a valid bbolt meta (magic, checksum)")
    meta = max(valid, key=lambda m: m.txid)
    ps = meta.page_size
    if ps < MIN_PAGE_SIZE or ps > MAX_PAGE_SIZE or ps & (ps - 1):
        raise BoltError("corrupt", f"page size {ps} is not a power of two in 1 KiB..64 KiB")
    if meta.root < 2 or meta.root >= meta.high_water:
        raise BoltError("corrupt", f"root page {meta.root} is outside 2..{meta.high_water - 1}")
    return meta


def _open_fd(path: str, dir_fd: int | None) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BoltError("missing", f"{path} does not exist") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BoltError("unsafe", f"{path} is a symlink; it is not followed") from None
        raise BoltError("unreadable", f"cannot open {path}: {err.strerror}") from None


@contextlib.contextmanager
def open_bolt(
    path: str,
    *,
    dir_fd: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    timeout: float = DEFAULT_TIMEOUT,
) -> Iterator[BoltFile]:
    """Open ``path`` (relative to ``dir_fd`` if given) read-only under a shared flock taken
    without waiting (held elsewhere: BoltError "locked" at once), for the ``with`` body only.
    Keep the body short: containerd's start waits for this lock."""
    fd = _open_fd(path, dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BoltError("unsafe", f"{path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BoltError("locked", f"{path} is locked (containerd runs)") from None
        except OSError as err:
            raise BoltError("unreadable", f"cannot lock {path}: {err.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            try:
                meta = _choose_meta(fd, size)
            except OSError as err:
                raise BoltError("unreadable", f"cannot read {path}: {err.strerror}") from None
            budget = _Budget(max_bytes, max_elements, time.monotonic() + timeout)
            yield BoltFile(fd, size, meta, budget)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
