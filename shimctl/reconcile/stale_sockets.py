"""Stale sockets: sockets in the shim socket dir that refuse connections and that no bundle
names (a shim that died without removing its socket).

The socket dir is shared by every containerd on the node, whatever its state dir (layout.md:
the runc shim hard-codes /run/containerd/s). A socket is provably this containerd's only when
its name is the one a shim derives from this containerd's address and a namespace/id it knows
(pkg/shim/util_unix.go SocketAddress at containerd v1.7.24); any other is `foreign`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from shimctl.errors import ShimctlError
from shimctl.models.findings import Kind
from shimctl.node import fs, identifiers, sockets
from shimctl.reconcile.evidence import BundleEvidence, Item, Leftover, age_of
from shimctl.reconcile.walk import subdirs
from shimctl.settings import Settings
from shimctl.shim.address import first_unix_path, unix_address

if TYPE_CHECKING:
    from shimctl.records.model import OwnerRecords

_STALE = "socket refuses connections and no bundle names it"
_OURS = f"{_STALE}; its name is the one a shim of this containerd derives for"
_FOREIGN = (
    f"{_STALE}; its name derives from no namespace/id this containerd knows: it may be "
    "another containerd's"
)


def stale_sockets(settings: Settings, bundles: list[BundleEvidence], now: float) -> list[Leftover]:
    referenced = {p for ev in bundles if ev.boot and (p := sockets.socket_file(ev.boot.address))}
    unnamed = [
        entry
        for entry in subdirs(settings.socket_dir)
        if entry.path not in referenced and len(entry.name) == 64
    ]
    # Listening per /proc/net/unix (read only when some socket is unnamed): not stale, and no
    # connect needed to say so (a dir of other containerds' live shims would otherwise cost a
    # connect each). Anything not listed is still probed: /proc/net/unix shows this network
    # namespace's sockets only.
    listening = sockets.listening_paths() if unnamed else frozenset()
    # Anything but a socket that refuses (a file, a live socket) is not stale.
    candidates = [
        entry
        for entry in unnamed
        if entry.path not in listening and sockets.probe(entry.path) is sockets.SocketState.REFUSED
    ]
    if not candidates:
        return []
    # Also spare sockets named by bundles the evidence could not parse (junk, unsafe).
    addresses, known = _scan_state(settings)
    referenced |= addresses
    known.update((ev.namespace, ev.sandbox_of) for ev in bundles if ev.sandbox_of)
    ours = _derived_names(settings, known)
    found = []
    for entry in candidates:
        if entry.path in referenced:
            continue
        item = Item(
            "",
            entry.name,
            entry.path,
            age_seconds=age_of(entry.path, now),
            address=unix_address(entry.path),
        )
        if (pair := ours.get(entry.name)) is not None:
            reason = f"{_OURS} {pair[0]}/{pair[1]}"
            found.append(Leftover(item, Kind.STALE_SOCKET, reason, garbage=True))
        else:
            found.append(Leftover(item, Kind.STALE_SOCKET, _FOREIGN, garbage=True, foreign=True))
    return found


def prove_with_records(
    settings: Settings, leftovers: list[Leftover], records: OwnerRecords | None
) -> list[Leftover]:
    """`leftovers` with the foreign sockets whose name derives from an id in containerd's
    records (a container, task or sandbox whose bundle is gone) marked this containerd's."""
    foreign = [left for left in leftovers if left.foreign]
    if not foreign or records is None or not records.known:
        return leftovers
    known = {
        (ns.name, id)
        for ns in records.namespaces.values()
        for ids in (ns.containers, ns.tasks, ns.sandboxes)
        for id in ids
    }
    ours = _derived_names(settings, known)
    proven = []
    for left in leftovers:
        pair = ours.get(left.item.id) if left.foreign else None
        if pair is not None:
            reason = f"{_OURS} {pair[0]}/{pair[1]} (in its records)"
            left = left._replace(reason=reason, foreign=False)
        proven.append(left)
    return proven


def _derived_names(
    settings: Settings, known: Iterable[tuple[str, str]]
) -> dict[str, tuple[str, str]]:
    """Socket file name -> the namespace/id a shim of this containerd derives it from."""
    names = {}
    for ns, id in known:
        if not (identifiers.is_valid(ns) and identifiers.is_valid(id)):
            continue  # containerd never made it (a hostile dir name): no shim derived from it
        address = sockets.derive_address(settings.address, ns, id, settings.socket_dir)
        names[address.rsplit("/", 1)[-1]] = (ns, id)
    return names


def _scan_state(settings: Settings) -> tuple[set[str], set[tuple[str, str]]]:
    """Socket paths named by any bundle in any namespace (also outside the -n scope), and the
    namespace/id pairs the state and root dirs know (bundles, work dirs, hidden dirs)."""
    paths: set[str] = set()
    known: set[tuple[str, str]] = set()
    for base in (settings.task_root, settings.task_state):
        for ns_entry in subdirs(base):
            if ns_entry.is_dir(follow_symlinks=False):
                known.update(
                    (ns_entry.name, e.name.lstrip(".")) for e in subdirs(Path(ns_entry.path))
                )
    for ns_entry in subdirs(settings.task_state):
        if not ns_entry.is_dir(follow_symlinks=False):
            continue
        for entry in subdirs(Path(ns_entry.path)):
            if not entry.is_dir(follow_symlinks=False):
                continue
            for name in ("address", "bootstrap.json"):
                try:
                    # Bounded, no-follow, non-blocking: a FIFO, a link to /dev/zero or a huge
                    # file here must neither hang nor exhaust the run.
                    raw = fs.read_small(Path(entry.path) / name)[:4096]
                except (OSError, ShimctlError):
                    continue
                if (path := first_unix_path(raw.decode("utf-8", "replace"))) is not None:
                    paths.add(path)
    return paths, known
