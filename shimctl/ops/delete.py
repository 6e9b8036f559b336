"""`shimctl delete`: the task manager's delete — Delete RPC, Shutdown, bundle delete; if the
shim is gone, the shim binary's `delete` verb instead of the RPCs. Returns a DeleteResult and
never prints; everything happens under the state lock."""

from __future__ import annotations

from shimctl.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ProtocolError,
    ShimctlError,
    Unavailable,
    Unknown,
    Unsafe,
)
from shimctl.faults import checkpoint
from shimctl.models.results import DeleteResult
from shimctl.node import processes, sockets
from shimctl.node.bundle import SANDBOX, Bundle
from shimctl.node.lock import state_lock
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap
from shimctl.shim.task import Exit
from shimctl.steps import access, shimstop


def delete(settings: Settings, id: str, *, force: bool = False) -> DeleteResult:
    """Delete task `id`: through its shim if it answers, else with the shim binary's verb."""
    s = settings
    bundle = access.bundle_of(s, id)
    bundle.check_dir()
    with state_lock(s.task_state):
        bundle.check_dir()
        bundle.check_safe()
        sandboxed = bundle.read_text(SANDBOX) is not None
        notes: list[str] = []
        try:
            boot = bundle.connection()
        except InvalidArgument as err:
            boot = None
            notes.append(f"unreadable address: {err}")
        try:
            if boot is None:
                raise Unavailable("the bundle has no shim address")
            exit_, stopped = _delete_through_shim(s, bundle, boot, sandboxed, notes)
            method = "task-api"
        except (Unavailable, DeadlineExceeded, ProtocolError) as err:
            # Unavailable: nothing answers. DeadlineExceeded: something hangs. Garbage
            # (ProtocolError) is no answer either, but only --force acts on it.
            if isinstance(err, ProtocolError) and not force:
                raise
            exit_ = _delete_without_shim(s, bundle, boot, err, force=force, notes=notes)
            method, stopped = "shim-binary", True
        bundle.delete()
        # A shim that died in Shutdown (rather than exiting cleanly) leaves its socket.
        if (
            method == "task-api"
            and stopped
            and boot is not None
            and sockets.remove_if_stale(boot.address, s.socket_dir)
        ):
            notes.append("removed the stopped shim's stale socket")
    return DeleteResult(
        id=id,
        namespace=bundle.namespace,
        pid=exit_.pid if exit_ else None,
        exit_status=exit_.exit_status if exit_ else None,
        exited_at=exit_.exited_at.isoformat() if exit_ and exit_.exited_at else None,
        method=method,
        shim_stopped=stopped,
        notes=notes,
    )


def _delete_through_shim(
    s: Settings, bundle: Bundle, boot: Bootstrap, sandboxed: bool, notes: list[str]
) -> tuple[Exit | None, bool]:
    with access.dial(s, boot, bundle.namespace) as client:
        info = shimstop.connect_verified(client, bundle.id, bundle.path, bundle.namespace, s)
        try:
            exit_ = shimstop.delete_task(client, bundle.id, s)
        except Unknown as err:
            raise FailedPrecondition(
                f"the shim refused to delete task {bundle.id!r}: {err}",
                hint="stop the task first (it may still be running), then retry",
            ) from None
        checkpoint("delete:task-deleted")
        if exit_ is None:
            notes.append("the shim had no task (never created, or already deleted)")
        if sandboxed:
            notes.append("sandboxed task: the sandbox's shim keeps running")
            if exit_ is None:
                shimstop.run_delete_verb(s, bundle, notes)
            return exit_, False
        stopped = shimstop.shutdown(client, bundle.id, info.shim_pid, s, notes)
    checkpoint("delete:shim-stopped")
    if exit_ is None:
        # The shim knew no task, but the runtime may have one (a create cut short): its
        # delete verb, or a `runc init` outlives the bundle (as in reconcile/apply.py).
        shimstop.run_delete_verb(s, bundle, notes)
    return exit_, stopped


def _delete_without_shim(
    s: Settings,
    bundle: Bundle,
    boot: Bootstrap | None,
    reason: ShimctlError,
    *,
    force: bool,
    notes: list[str],
) -> Exit | None:
    live = [
        shim
        for shim in processes.find_shims(s.address)
        if processes.is_shim_of(
            shim, namespace=bundle.namespace, address=s.address, bundle=bundle.path
        )
    ]
    if live and not force:
        pids = ", ".join(str(p.ref.pid) for p in live)
        raise FailedPrecondition(
            f"the shim of {bundle.id!r} (pid {pids}) is alive but does not answer: {reason}",
            hint="retry later, or pass --force to stop it (SIGTERM, then SIGKILL)",
        )
    for shim in live:
        if not processes.terminate(shim.ref, grace=s.timeouts.shutdown):
            raise Unsafe(f"shim process {shim.ref.pid} did not exit after SIGKILL")
        notes.append(f"stopped unresponsive shim {shim.ref.pid}")
    exit_ = shimstop.run_delete_verb(s, bundle, notes)
    checkpoint("delete:verb-run")
    settle = 1.0 if live else 0.0  # a shim we just killed may hold its socket a moment
    if boot is not None and sockets.remove_if_stale(boot.address, s.socket_dir, settle=settle):
        notes.append("removed the dead shim's socket")
    return exit_
