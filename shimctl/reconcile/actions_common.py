"""What every action of apply.py (and actions_task.py, actions_owner.py) shares: the Skip that
leaves a changed item alone, the bundle re-read under the lock, the runtime's delete verb, the
dead shim's socket and the re-verification that a shim is dead."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from shimctl.errors import ShimctlError
from shimctl.node import processes, sockets
from shimctl.node.bundle import Bundle
from shimctl.reconcile.evidence import Item, locate
from shimctl.settings import Settings
from shimctl.steps import shimstop

Scan = list[processes.ShimProcess]
"""The shim processes found under the lock (scanned only when a dead-shim re-check needs it);
every action takes it, only delete-dead uses it."""

Notes = Iterator[str]
"""What an action says as it goes (one note each), ending when the action is done."""


class Skip(Exception):
    """The item changed since inspection; leave it."""


def present_bundle(settings: Settings, item: Item) -> Bundle:
    """The item's bundle; Skip when it is gone."""
    bundle = locate(settings, item.namespace, item.id)
    if not bundle.exists():
        raise Skip("the bundle is already gone")
    return bundle


def delete_verb(settings: Settings, bundle: Bundle, pod_binary: str | None = None) -> Notes:
    said: list[str] = []  # shimstop reports through a list: passed on as they came
    shimstop.run_delete_verb(settings, bundle, said, pod_binary=pod_binary)
    yield from said


def remove_dead_socket(settings: Settings, item: Item, *, settle: float = 0.0) -> Notes:
    """A shim that died (or died mid-call) leaves its socket; a live one is not touched.
    Removed before the bundle: a run killed in between leaves the bundle, found dead again
    next time, never a socket no bundle names."""
    if item.address and sockets.remove_if_stale(item.address, settings.socket_dir, settle=settle):
        yield "removed its stale socket"


def dead_shim_gone(
    settings: Settings, bundle: Bundle, *, wait: float = 0.0, shims: Scan | None = None
) -> None:
    """Re-verify: nothing answers on the bundle's address and no shim process of it lives
    (waiting up to `wait` seconds for a dying one to go). `shims`: a scan already made under
    the lock; None scans now."""
    # Processes first, then the socket: a dying shim's socket accepts until it has let go.
    for shim in processes.find_shims(settings.address) if shims is None else shims:
        mine = processes.is_shim_of(
            shim, namespace=bundle.namespace, address=settings.address, bundle=bundle.path
        )
        if mine and not processes.wait_gone(shim.ref, wait):
            raise Skip(f"shim process {shim.ref.pid} of this bundle is alive")
    boot = None
    with contextlib.suppress(ShimctlError):
        boot = bundle.connection()
    listening = sockets.SocketState.LISTENING
    if boot is not None and sockets.address_state(boot.address, settle=wait) is listening:
        raise Skip("its socket accepts connections again")
