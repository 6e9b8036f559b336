"""Carry out planned actions. Each action re-checks its evidence under the state lock first,
so an item that changed since inspection (a task created, a shim come back, a container record
made again) is left alone.

Every action returns its own ActionResult: worker threads share nothing they write. An action
is a generator of notes, so the notes made before a failure or a skip are kept. The actions on
a task through its shim (delete-task, stop-task) are in actions_task.py, those that rest on
containerd's records (delete-via-containerd, the no-record re-check) in actions_owner.py."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from shimctl.errors import NotFound, ShimctlError, Unavailable, Unsafe
from shimctl.faults import checkpoint
from shimctl.models.findings import Action, Kind, Outcome
from shimctl.models.progress import ProgressFn, counted
from shimctl.node import processes, sockets
from shimctl.node.bundle import SHIM_BINARY_PATH, Bundle
from shimctl.node.fs import is_within, remove_tree
from shimctl.node.lock import state_lock
from shimctl.reconcile import actions_owner, actions_task
from shimctl.reconcile.actions_common import (
    Notes,
    Scan,
    Skip,
    dead_shim_gone,
    delete_verb,
    present_bundle,
    remove_dead_socket,
)
from shimctl.reconcile.evidence import Item, locate
from shimctl.reconcile.plan import Decision, Planned
from shimctl.settings import Settings
from shimctl.steps import shimstop

__all__ = ["ActionResult", "Skip", "apply"]

MAX_WORKERS = 16


class ActionResult(NamedTuple):
    outcome: Outcome
    error: str | None = None
    notes: tuple[str, ...] = ()


def apply(
    settings: Settings,
    planned: Sequence[Planned],
    *,
    dry_run: bool,
    progress: ProgressFn | None = None,
) -> list[ActionResult | None]:
    """The result of each planned item's action, in the plan's order (None: no action)."""
    results: list[ActionResult | None] = [None] * len(planned)
    todo = [i for i, p in enumerate(planned) if p.decision.action.changes_anything]
    if not todo:
        return results
    if dry_run:
        for i in todo:
            results[i] = ActionResult(Outcome.DRY_RUN)
        return results
    with (
        state_lock(settings.task_state),
        ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(todo))) as pool,
    ):
        # One /proc scan under the lock serves every dead-shim re-check: no shimctl can start
        # a shim for an existing bundle meanwhile, and a dead process does not come back.
        needs_scan = any(planned[i].decision.action == Action.DELETE_DEAD for i in todo)
        shims = processes.find_shims(settings.address) if needs_scan else []

        def run(i: int) -> ActionResult:
            if planned[i].decision.after_members:
                kept = _member_not_cleaned(planned, results, i)
                if kept is not None:
                    return ActionResult(Outcome.SKIPPED, None, (kept,))
            return _run(settings, planned[i], shims)

        act = counted(run, "apply", len(todo), progress)
        # A sandbox cleaned in the same run as its members goes after them, and only if each
        # of them is gone: a member left (changed since inspection, failed) keeps its sandbox.
        for phase in (False, True):
            batch = [i for i in todo if planned[i].decision.after_members is phase]
            for i, result in zip(batch, pool.map(act, batch), strict=True):
                results[i] = result
    return results


_GONE = (Outcome.DONE, Outcome.REMOVED_BY_CONTAINERD)


def _member_not_cleaned(
    planned: Sequence[Planned], results: Sequence[ActionResult | None], i: int
) -> str | None:
    """Why the sandbox `planned[i]` must stay: a member (a bundle naming it, or on its shim)
    whose own action did not end with the member gone. None when every member is gone."""
    sandbox = planned[i].item
    key = sockets.socket_file(sandbox.address) if sandbox.address else None
    for j, (item, _decision) in enumerate(planned):
        if j == i or item.namespace != sandbox.namespace or item.path == sandbox.path:
            continue
        on_its_shim = key is not None and bool(item.address)
        if item.sandbox != sandbox.id and not (
            on_its_shim and sockets.socket_file(item.address or "") == key
        ):
            continue
        result = results[j]
        if result is None or result.outcome not in _GONE:
            outcome = result.outcome if result is not None else "no action"
            return f"member {item.id} was not cleaned ({outcome}): kept for it"
    return None


def _run(settings: Settings, planned: Planned, shims: Scan) -> ActionResult:
    item, decision = planned
    notes: list[str] = []
    try:
        if decision.recheck_no_record:
            actions_owner.recheck_no_record(settings, item)
        for note in _ACTIONS[decision.action](settings, item, decision, shims):
            notes.append(note)
        checkpoint("gc:action-done")
        return ActionResult(Outcome.DONE, None, tuple(notes))
    except Skip as why:
        return ActionResult(Outcome.SKIPPED, None, (*notes, str(why)))
    except (ShimctlError, OSError) as err:
        if decision.action in _OF_A_BUNDLE and _vanished(settings, item, err):
            return ActionResult(Outcome.REMOVED_BY_CONTAINERD, None, (*notes, str(err)))
        return ActionResult(Outcome.FAILED, str(err), tuple(notes))


def _vanished(settings: Settings, item: Item, err: BaseException) -> bool:
    """The bundle went while its action ran, and not by shimctl's hand: a path not found and
    the bundle's name gone. containerd's own cleanup of a disconnected shim deletes the bundle
    too (core/runtime/v2/shim.go at containerd v2.1.9: cleanupAfterDeadShim), and its atomic
    delete renames the bundle to the same `.<id>` shimctl's does."""
    if not isinstance(err, FileNotFoundError | NotFound):
        return False
    return not os.path.lexists(locate(settings, item.namespace, item.id).path)


def _delete_dead(settings: Settings, item: Item, _decision: Decision, shims: Scan) -> Notes:
    bundle = present_bundle(settings, item)
    dead_shim_gone(settings, bundle, shims=shims)
    yield from delete_verb(settings, bundle)
    checkpoint("gc:verb-run")
    yield from remove_dead_socket(settings, item)
    bundle.delete()


def _delete_bundle(settings: Settings, item: Item, _decision: Decision, _shims: Scan) -> Notes:
    bundle = present_bundle(settings, item)
    try:
        if os.listdir(bundle.path):
            raise Skip("the bundle is no longer empty")
    except OSError:
        pass
    bundle.delete()
    yield from ()


def _remove(settings: Settings, item: Item, decision: Decision, _shims: Scan) -> Notes:
    if decision.kind == Kind.STALE_SOCKET:
        if not (item.address and sockets.remove_if_stale(item.address, settings.socket_dir)):
            raise Skip("the socket is gone or accepts connections again")
        return
    path = Path(item.path)
    top = settings.task_root if is_within(path, settings.task_root) else settings.task_state
    if not is_within(path, top):
        raise Unsafe(f"{path} is outside {settings.task_root} and {settings.task_state}")
    if decision.kind == Kind.ORPHAN_WORKDIR and locate(settings, item.namespace, item.id).exists():
        raise Skip("its bundle exists now")
    if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
        os.unlink(path)  # a link or file in ROOT/<ns>: remove it, never follow it
        return
    remove_tree(path, within=top)
    yield from ()


def _shutdown_orphan(settings: Settings, item: Item, _decision: Decision, _shims: Scan) -> Notes:
    from shimctl.shim.task import TaskClient

    assert item.address is not None and item.shim_pid is not None
    if item.shim is None or not processes.is_alive(item.shim):
        raise Skip("the process is gone")
    t = settings.timeouts
    said: list[str] = []
    try:
        with TaskClient.connect(
            item.address, item.namespace, timeout=t.load, api_version=item.api_version or 2
        ) as client:
            if client.connect_info(item.id, timeout=t.load).shim_pid != item.shim_pid:
                raise Skip("its socket is served by another process now")
            try:
                client.pids(item.id, timeout=t.load)
                raise Skip("it has a task now")
            except NotFound:
                pass
            gone = shimstop.shutdown(client, item.id, item.shim_pid, settings, said)
    except Unavailable as err:
        raise Skip(f"it no longer answers: {err}") from None
    yield from said
    if not gone:
        raise Unsafe(f"shim {item.shim_pid} still runs after Shutdown")


def _kill_hung(settings: Settings, item: Item, _decision: Decision, _shims: Scan) -> Notes:
    bundle = present_bundle(settings, item)
    assert item.shim_pid is not None
    shim = processes.verify_shim(
        item.shim_pid,
        namespace=item.namespace,
        address=settings.address,
        bundle=bundle.path,
        shared=False,  # only the bundle's own shim is killed, never a pod's shared one
        seen=item.shim,
    )
    # The shim serves its pod's members too: their containers would outlive it, unseen. Their
    # verbs run before the kill, while their bundles are there: once the shim's connection
    # closes, containerd 2.x deletes a member's bundle without running the verb (shimTask.delete
    # then shim.Delete in core/runtime/v2/shim.go at v2.1.9), and its disconnect cleanup may
    # delete the sandbox bundle that names them.
    for member in _members_of(settings, bundle):
        yield f"member {member.id}: its container is stopped before its shim is killed"
        yield from delete_verb(settings, member, _shim_binary_of(bundle))
    if not processes.terminate(shim.ref, grace=settings.timeouts.shutdown):
        raise Unsafe(f"shim {item.shim_pid} did not exit after SIGKILL")
    yield f"stopped hung shim {item.shim_pid}"
    yield from delete_verb(settings, bundle)
    yield from remove_dead_socket(settings, item, settle=1.0)
    bundle.delete()


def _shim_binary_of(bundle: Bundle) -> str | None:
    """A sandbox's shim binary, for its members (2.x writes none into theirs)."""
    try:
        return bundle.read_text(SHIM_BINARY_PATH)
    except ShimctlError:
        return None  # each member's verb then says what is missing


def _members_of(settings: Settings, bundle: Bundle) -> list[Bundle]:
    """Other bundles of the namespace whose connection names the same shim socket (a pod's
    containers on the sandbox's shim)."""
    own = bundle.connection()
    key = sockets.socket_file(own.address) if own is not None else None
    if key is None:
        return []
    members = []
    ns_dir = bundle.path.parent
    for name in sorted(os.listdir(ns_dir)):
        if name == bundle.id or name.startswith("."):
            continue
        other = locate(settings, bundle.namespace, name)
        with contextlib.suppress(ShimctlError, OSError):
            boot = other.connection()
            if boot is not None and sockets.socket_file(boot.address) == key:
                members.append(other)
    return members


def _runc_delete(settings: Settings, item: Item, _decision: Decision, _shims: Scan) -> Notes:
    from shimctl.reconcile.runc_state import STATE_JSON, bundle_label, read_state
    from shimctl.steps.runcstate import delete_runc_state

    state_dir = Path(item.path)
    # Re-checked under the lock: still runc state of this state dir's bundle, and the bundle
    # still gone (a create of the same id would have made the bundle first).
    if os.path.lexists(locate(settings, item.namespace, item.id).path):
        raise Skip("its bundle exists now")
    if bundle_label(read_state(state_dir / STATE_JSON)) is None:
        raise Skip("its runc state is gone or changed")
    if item.task_pids:
        yield f"runc kills its process {item.task_pids[0]}"
    yield delete_runc_state(state_dir, item.runtime or "runc", settings.timeouts.shutdown + 5.0)


_OF_A_BUNDLE = frozenset({Action.DELETE_DEAD, Action.DELETE_TASK, Action.STOP_TASK, Action.KILL})
"""Actions that delete a bundle containerd's own cleanup may delete at the same time."""

_ACTIONS: dict[Action, Callable[[Settings, Item, Decision, Scan], Notes]] = {
    Action.DELETE_DEAD: _delete_dead,
    Action.DELETE_TASK: actions_task.delete_task,
    Action.STOP_TASK: actions_task.stop_task,
    Action.DELETE_VIA_CONTAINERD: actions_owner.delete_via_containerd,
    Action.DELETE_BUNDLE: _delete_bundle,
    Action.REMOVE: _remove,
    Action.SHUTDOWN: _shutdown_orphan,
    Action.KILL: _kill_hung,
    Action.RUNC_DELETE: _runc_delete,
}
