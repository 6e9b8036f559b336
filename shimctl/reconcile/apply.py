"""Carry out planned actions. Each action re-checks its evidence under the state lock first,
so an item that changed since inspection (a task created, a shim come back) is left alone."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shimctl.errors import NotFound, ShimctlError, Unavailable, Unsafe
from shimctl.faults import checkpoint
from shimctl.models.findings import Action, Finding, Kind
from shimctl.models.progress import ProgressFn, counted
from shimctl.node import processes, sockets
from shimctl.node.bundle import Bundle
from shimctl.node.fs import is_within, remove_tree
from shimctl.node.lock import state_lock
from shimctl.ops import shimstop
from shimctl.reconcile.plan import KEEP_ACTIONS
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap

MAX_WORKERS = 16

Scan = list[processes.ShimProcess]
"""The shim processes found under the lock (scanned only when a dead-shim re-check needs it);
every action takes it, only delete-dead uses it."""


class Skip(Exception):
    """The item changed since inspection; leave it."""


def apply(
    settings: Settings,
    findings: list[Finding],
    *,
    dry_run: bool,
    progress: ProgressFn | None = None,
) -> None:
    todo = [f for f in findings if f.action not in KEEP_ACTIONS]
    if not todo:
        return
    if dry_run:
        for f in todo:
            f.outcome = "dry-run"
        return
    with (
        state_lock(settings.task_state),
        ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo))) as pool,
    ):
        # One /proc scan under the lock serves every dead-shim re-check: no shimctl can start
        # a shim for an existing bundle meanwhile, and a dead process does not come back.
        needs_scan = any(f.action == Action.DELETE_DEAD for f in todo)
        shims = processes.find_shims(settings.address) if needs_scan else []

        def run(f: Finding) -> None:
            _run(settings, f, shims)

        list(pool.map(counted(run, "apply", len(todo), progress), todo))


def _run(settings: Settings, f: Finding, shims: list[processes.ShimProcess]) -> None:
    try:
        _ACTIONS[f.action](settings, f, shims)
        f.outcome = "done"
        checkpoint("gc:action-done")
    except Skip as why:
        f.outcome = "skipped"
        f.notes.append(str(why))
    except (ShimctlError, OSError) as err:
        f.outcome = "failed"
        f.error = str(err)


def _bundle(settings: Settings, f: Finding) -> Bundle:
    bundle = Bundle.locate(settings.task_state, settings.task_root, f.namespace, f.id)
    if not bundle.exists():
        raise Skip("the bundle is already gone")
    return bundle


def _delete_task(settings: Settings, f: Finding, _shims: Scan) -> None:
    bundle = _bundle(settings, f)
    try:
        _delete_task_through_shim(settings, f, bundle)
    except Unavailable as err:
        # The shim died since inspection or while answering (containerd's ErrClosed; or a
        # crashed shimctl had already shut it down): clean it up as a dead one, re-verified.
        f.notes.append(f"the shim went away ({err}); cleaned as dead")
        _dead_shim_gone(settings, bundle, wait=settings.timeouts.shutdown)
        shimstop.run_delete_verb(settings, bundle, f.notes)
    _remove_dead_socket(settings, f)
    bundle.delete()


def _remove_dead_socket(settings: Settings, f: Finding, *, settle: float = 0.0) -> None:
    """A shim that died (or died mid-call) leaves its socket; a live one is not touched.
    Removed before the bundle: a run killed in between leaves the bundle, found dead again
    next time, never a socket no bundle names."""
    if f.address and sockets.remove_if_stale(f.address, settings.socket_dir, settle=settle):
        f.notes.append("removed its stale socket")


def _delete_task_through_shim(settings: Settings, f: Finding, bundle: Bundle) -> None:
    from shimctl.shim.task import TaskClient

    boot = bundle.connection()
    if boot is None and f.address is not None:
        # No connection file (a 2.x create interrupted after `start`): the address inspection
        # reached the shim at, derived from the shim's own argv.
        boot = Bootstrap(address=f.address, version=f.api_version or 2)
    if boot is None:
        raise Skip("the bundle no longer has an address")
    t = settings.timeouts
    with TaskClient.connect(
        boot.address, f.namespace, timeout=t.load, api_version=boot.version
    ) as client:
        info = shimstop.connect_verified(client, f.id, bundle.path, f.namespace, settings)
        if f.kind == Kind.LEAKED and f.task_status is None:
            try:
                pids = client.pids(f.id, timeout=t.load)
                raise Skip(f"a task appeared since inspection (pids {pids})")
            except NotFound:
                pass
        exit_ = shimstop.delete_task(client, f.id, settings)
        checkpoint("gc:task-deleted")
        if exit_ is not None:
            f.notes.append(f"task deleted (exit status {exit_.exit_status})")
        if f.shutdown_shim and f.sandbox is None:
            shimstop.shutdown(client, f.id, info.shim_pid, settings, f.notes)
            checkpoint("gc:shim-stopped")
        else:
            f.notes.append("shared shim: not shut down")


def _dead_shim_gone(
    settings: Settings,
    bundle: Bundle,
    *,
    wait: float = 0.0,
    shims: list[processes.ShimProcess] | None = None,
) -> None:
    """Re-verify: nothing answers on the bundle's address and no shim process of it lives
    (waiting up to `wait` seconds for a dying one to go). `shims`: a scan already made under
    the lock; None scans now."""
    # Processes first, then the socket: a dying shim's socket accepts until it has let go.
    for shim in processes.find_shims(settings.address) if shims is None else shims:
        if shim.runs_in(bundle.namespace, bundle.path) and not processes.wait_gone(shim.ref, wait):
            raise Skip(f"shim process {shim.ref.pid} of this bundle is alive")
    boot = None
    with contextlib.suppress(ShimctlError):
        boot = bundle.connection()
    listening = sockets.SocketState.LISTENING
    if boot is not None and sockets.address_state(boot.address, settle=wait) is listening:
        raise Skip("its socket accepts connections again")


def _delete_dead(settings: Settings, f: Finding, shims: Scan) -> None:
    bundle = _bundle(settings, f)
    _dead_shim_gone(settings, bundle, shims=shims)
    shimstop.run_delete_verb(settings, bundle, f.notes)
    checkpoint("gc:verb-run")
    _remove_dead_socket(settings, f)
    bundle.delete()


def _delete_bundle(settings: Settings, f: Finding, _shims: Scan) -> None:
    bundle = _bundle(settings, f)
    try:
        if os.listdir(bundle.path):
            raise Skip("the bundle is no longer empty")
    except OSError:
        pass
    bundle.delete()


def _remove(settings: Settings, f: Finding, _shims: Scan) -> None:
    if f.kind == Kind.STALE_SOCKET:
        if not (f.address and sockets.remove_if_stale(f.address, settings.socket_dir)):
            raise Skip("the socket is gone or accepts connections again")
        return
    path = Path(f.path)
    top = settings.task_root if is_within(path, settings.task_root) else settings.task_state
    if not is_within(path, top):
        raise Unsafe(f"{path} is outside {settings.task_root} and {settings.task_state}")
    if (
        f.kind == Kind.ORPHAN_WORKDIR
        and Bundle.locate(settings.task_state, settings.task_root, f.namespace, f.id).exists()
    ):
        raise Skip("its bundle exists now")
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)  # a link or file in ROOT/<ns>: remove it, never follow it
        return
    remove_tree(path, within=top)


def _shutdown_orphan(settings: Settings, f: Finding, _shims: Scan) -> None:
    from shimctl.shim.task import TaskClient

    assert f.address is not None and f.shim_pid is not None
    ref = processes.ref_of(f.shim_pid)
    if ref is None:
        raise Skip("the process is gone")
    t = settings.timeouts
    try:
        with TaskClient.connect(
            f.address, f.namespace, timeout=t.load, api_version=f.api_version or 2
        ) as client:
            if client.connect_info(f.id, timeout=t.load).shim_pid != f.shim_pid:
                raise Skip("its socket is served by another process now")
            try:
                client.pids(f.id, timeout=t.load)
                raise Skip("it has a task now")
            except NotFound:
                pass
            if not shimstop.shutdown(client, f.id, f.shim_pid, settings, f.notes):
                raise Unsafe(f"shim {f.shim_pid} still runs after Shutdown")
    except Unavailable as err:
        raise Skip(f"it no longer answers: {err}") from None


def _kill_hung(settings: Settings, f: Finding, _shims: Scan) -> None:
    bundle = _bundle(settings, f)
    assert f.shim_pid is not None
    shim = processes.verify_shim(
        f.shim_pid,
        namespace=f.namespace,
        address=settings.address,
        bundle=bundle.path,
        grouped=False,
    )
    if not processes.terminate(shim.ref, grace=settings.timeouts.shutdown):
        raise Unsafe(f"shim {f.shim_pid} did not exit after SIGKILL")
    f.notes.append(f"stopped hung shim {f.shim_pid}")
    shimstop.run_delete_verb(settings, bundle, f.notes)
    _remove_dead_socket(settings, f, settle=1.0)
    bundle.delete()


_ACTIONS: dict[str, Callable[[Settings, Finding, Scan], None]] = {
    Action.DELETE_DEAD: _delete_dead,
    Action.DELETE_TASK: _delete_task,
    Action.DELETE_BUNDLE: _delete_bundle,
    Action.REMOVE: _remove,
    Action.SHUTDOWN: _shutdown_orphan,
    Action.KILL: _kill_hung,
}
