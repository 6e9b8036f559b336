"""A test-only bbolt file writer, to make files of known content for the reader, and hostile
variants of them (the real files come from real containerds in tests/real/test_records.py).

It lays a tree out as bbolt does (go.etcd.io/bbolt: node.go write, bucket.go inlineable):
buckets without sub-buckets that fit in a quarter page are inline, other buckets get leaf
pages (split when full, with branch pages above), big values overflow onto following pages.
Pages 0 and 1 are meta pages with checksums, page 2 an empty freelist.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Union

from shimctl.records.bolt import (
    BRANCH_PAGE,
    BUCKET_LEAF_FLAG,
    LEAF_PAGE,
    MAGIC,
    META_PAGE,
    VERSION,
    fnv1a64,
)

Tree = dict[bytes, Union[bytes, "Tree"]]

HEADER = 16
ELEMENT = 16
FREELIST_PAGE = 0x10


@dataclass
class Writer:
    page_size: int = 4096
    #: Split leaf pages at this many elements too (to force branch pages in small trees).
    max_elements: int = 10_000
    pages: dict[int, bytes] = field(default_factory=dict)
    next_id: int = 3

    def _alloc(self, data: bytes) -> int:
        pgid = self.next_id
        n = max(1, -(-len(data) // self.page_size))
        self.next_id += n
        self.pages[pgid] = data.ljust(n * self.page_size, b"\0")
        return pgid

    def _leaf(self, entries: list[tuple[bytes, bytes, int]], pgid: int | None) -> bytes:
        n = len(entries)
        elements = bytearray()
        data = bytearray()
        for i, (key, value, flags) in enumerate(entries):
            pos = (n - i) * ELEMENT + len(data)
            elements += struct.pack("<IIII", flags, pos, len(key), len(value))
            data += key + value
        size = HEADER + len(elements) + len(data)
        overflow = max(0, -(-size // self.page_size) - 1) if pgid is not None else 0
        return struct.pack("<QHHI", pgid or 0, LEAF_PAGE, n, overflow) + elements + data

    def _branch(self, children: list[tuple[bytes, int]], pgid: int) -> bytes:
        n = len(children)
        elements = bytearray()
        data = bytearray()
        for i, (key, child) in enumerate(children):
            pos = (n - i) * ELEMENT + len(data)
            elements += struct.pack("<IIQ", pos, len(key), child)
            data += key
        size = HEADER + len(elements) + len(data)
        overflow = max(0, -(-size // self.page_size) - 1)
        return struct.pack("<QHHI", pgid, BRANCH_PAGE, n, overflow) + elements + data

    def _write_leaf(self, entries: list[tuple[bytes, bytes, int]]) -> int:
        return self._alloc(self._leaf(entries, self.next_id))

    def _split(self, sizes: list[int]) -> list[tuple[int, int]]:
        groups: list[tuple[int, int]] = []
        start, used = 0, HEADER
        for i, size in enumerate(sizes):
            if i > start and (used + size > self.page_size or i - start >= self.max_elements):
                groups.append((start, i))
                start, used = i, HEADER
            used += size
        groups.append((start, len(sizes)))
        return groups

    def bucket(self, tree: Tree) -> bytes:
        """The value of a bucket entry for ``tree`` (inline or with its own pages)."""
        entries: list[tuple[bytes, bytes, int]] = []
        has_buckets = False
        for key in sorted(tree):
            value = tree[key]
            if isinstance(value, dict):
                entries.append((key, self.bucket(value), BUCKET_LEAF_FLAG))
                has_buckets = True
            else:
                entries.append((key, value, 0))
        size = HEADER + sum(ELEMENT + len(k) + len(v) for k, v, _ in entries)
        if not has_buckets and size <= self.page_size // 4:
            return struct.pack("<QQ", 0, 0) + self._leaf(entries, None)
        return struct.pack("<QQ", self.tree_pages(entries), 0)

    def tree_pages(self, entries: list[tuple[bytes, bytes, int]]) -> int:
        """Leaf pages for ``entries`` and branch pages above them; returns the root page id."""
        if not entries:  # an empty bucket with its own page: one empty leaf
            return self._write_leaf([])
        groups = self._split([ELEMENT + len(k) + len(v) for k, v, _ in entries])
        level = [(entries[a][0], self._write_leaf(entries[a:b])) for a, b in groups]
        while len(level) > 1:
            groups = self._split([ELEMENT + len(k) for k, _ in level])
            level = [(level[a][0], self._write_branch(level[a:b])) for a, b in groups]
        return level[0][1]

    def _write_branch(self, children: list[tuple[bytes, int]]) -> int:
        return self._alloc(self._branch(children, self.next_id))

    def meta(self, pgid: int, root: int, txid: int, high_water: int) -> bytes:
        fields = struct.pack(
            "<IIIIQQQQQ", MAGIC, VERSION, self.page_size, 0, root, 0, 2, high_water, txid
        )
        header = struct.pack("<QHHI", pgid, META_PAGE, 0, 0)
        return (header + fields + struct.pack("<Q", fnv1a64(fields))).ljust(self.page_size, b"\0")

    def build(self, tree: Tree, txid: int = 7) -> bytes:
        # The root bucket is never inline: it always has its own page.
        entries: list[tuple[bytes, bytes, int]] = []
        for key in sorted(tree):
            value = tree[key]
            if isinstance(value, dict):
                entries.append((key, self.bucket(value), BUCKET_LEAF_FLAG))
            else:
                entries.append((key, value, 0))
        root = self.tree_pages(entries)
        high_water = self.next_id
        freelist = struct.pack("<QHHI", 2, FREELIST_PAGE, 0, 0).ljust(self.page_size, b"\0")
        out = bytearray(self.meta(0, root, txid, high_water))
        out += self.meta(1, root, txid - 1, high_water)
        out += freelist
        for pgid in range(3, high_water):
            if pgid in self.pages:
                out += self.pages[pgid]
        assert len(out) == high_water * self.page_size
        return bytes(out)


def build(tree: Tree, *, page_size: int = 4096, max_elements: int = 10_000) -> bytes:
    """A complete bbolt file holding ``tree`` (bytes: values; dicts: buckets)."""
    return Writer(page_size=page_size, max_elements=max_elements).build(tree)
