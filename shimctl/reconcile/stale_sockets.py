"""Stale sockets: sockets in the shim socket dir that refuse connections and that no bundle
names (a shim that died without removing its socket)."""

from __future__ import annotations

from pathlib import Path

from shimctl.errors import ShimctlError
from shimctl.models.findings import Kind
from shimctl.node import fs, sockets
from shimctl.reconcile.evidence import BundleEvidence, Item, Leftover, age_of
from shimctl.reconcile.walk import subdirs
from shimctl.settings import Settings
from shimctl.shim.address import first_unix_path, unix_address


def stale_sockets(settings: Settings, bundles: list[BundleEvidence], now: float) -> list[Leftover]:
    referenced = {p for ev in bundles if ev.boot and (p := sockets.socket_file(ev.boot.address))}
    candidates = []
    for entry in subdirs(settings.socket_dir):
        if entry.path in referenced or len(entry.name) != 64:
            continue
        # Anything but a socket that refuses (a file, a live socket) is not stale.
        if sockets.probe(entry.path) is sockets.SocketState.REFUSED:
            candidates.append(entry)
    if candidates:
        # Also spare sockets named by bundles the evidence could not parse (junk, unsafe).
        referenced |= _all_addresses(settings)
    found = []
    for entry in candidates:
        if entry.path not in referenced:
            item = Item(
                "",
                entry.name,
                entry.path,
                age_seconds=age_of(entry.path, now),
                address=unix_address(entry.path),
            )
            reason = "socket refuses connections and no bundle names it"
            found.append(Leftover(item, Kind.STALE_SOCKET, reason, garbage=True))
    return found


def _all_addresses(settings: Settings) -> set[str]:
    """Socket paths named by any bundle in any namespace (also outside the -n scope)."""
    paths: set[str] = set()
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
    return paths
