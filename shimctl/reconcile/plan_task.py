"""What an answering shim's task means, with containerd's records as evidence: one frozen
Decision for one bundle.

The records tell apart what the shim's own answers cannot: a stopped task no client can ever
delete (its container record is gone: containerd's Tasks.Get/Delete answer NotFound), a task
whose exit containerd never saw because it exited while containerd was down (containerd #6771,
https://github.com/containerd/containerd/issues/6771; 1.7 and 2.x delete these at restart,
1.6 keeps them for ever), a running task no client can stop (orphaned), and a task stuck in
`created` by a containerd killed between a task's Create and Start.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from shimctl.models.findings import Action, Kind, Mode, Owner
from shimctl.reconcile.evidence import BundleEvidence
from shimctl.reconcile.ownership import OwnerView


@dataclass(frozen=True, slots=True)
class Policy:
    """A command's options that change decisions."""

    min_age: float = 0.0  # gc acts only on older items
    kill_hung: bool = False
    stop_orphaned: bool = False  # gc stops tasks containerd has no record of
    delete_created: bool = False  # gc deletes tasks stuck in created
    remove_foreign_sockets: bool = False  # gc removes stale sockets not provably this containerd's
    now: float | None = None  # when the evidence was collected (Unix seconds)


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Kind
    action: Action
    reason: str
    notes: tuple[str, ...] = ()
    # False when the shim serves other bundles that still have tasks (never shut down then).
    shutdown_shim: bool = True
    owner: Owner | None = None  # bundles only
    # The decision rests on containerd having no record of the task: apply re-reads the
    # records under the lock right before it acts, and skips the item if one appeared.
    recheck_no_record: bool = False
    # A sandbox cleaned in the same run as its members: apply acts on it after them.
    after_members: bool = False


def decide_task(
    ev: BundleEvidence, view: OwnerView, mode: Mode, policy: Policy, *, sandbox: bool
) -> Decision:
    """The decision for a bundle whose shim answered (``sandbox``: it serves other bundles)."""
    owner = view.owner_of(ev)
    if mode == Mode.LOAD and not ev.task_pids and view.in_sandbox_store(ev):
        # The manager keeps a shim whose id its sandbox store has, whatever its task says
        # (core/runtime/v2/shim_load.go, loadShim: sandboxStore.Get before the leak check).
        reason = "containerd's sandbox store has it: the manager keeps its shim"
        return Decision(Kind.SANDBOX, Action.KEEP, reason, owner=owner)
    if ev.has_task and ev.task_status == "stopped" and not ev.task_pids:
        return _stopped(ev, view, owner, mode, policy, sandbox)
    if ev.has_task:
        if mode == Mode.LOAD and not ev.task_pids:
            return Decision(
                Kind.LEAKED,
                Action.DELETE_TASK,
                "manager rule: the task has no processes",
                owner=owner,
            )
        if ev.task_status == "created":
            return _created(ev, view, owner, mode, policy)
        if owner == Owner.NO_RECORD:
            return _orphaned(ev, mode, policy)
        return Decision(
            Kind.RUNNING,
            Action.KEEP,
            f"task {ev.task_status or 'present'} with pids {ev.task_pids}",
            owner=owner,
        )
    if sandbox and mode != Mode.GC:
        return Decision(
            Kind.SANDBOX, Action.KEEP, "sandbox: other bundles use its shim", owner=owner
        )
    reason = "shim answers but has no task"
    return Decision(Kind.LEAKED, Action.DELETE_TASK, reason, owner=owner)


def _stopped(
    ev: BundleEvidence, view: OwnerView, owner: Owner, mode: Mode, policy: Policy, sandbox: bool
) -> Decision:
    exit_note = _exit_note(ev)
    if mode == Mode.LOAD:
        return Decision(
            Kind.LEAKED,
            Action.DELETE_TASK,
            "manager rule: the task has no processes (exited, not deleted)",
            exit_note,
            owner=owner,
        )
    if owner == Owner.NO_RECORD:
        return Decision(
            Kind.LEAKED,
            Action.DELETE_TASK,
            "task exited and containerd has no record of it: no client can ever delete it",
            exit_note,
            owner=owner,
            recheck_no_record=True,
        )
    if owner == Owner.TRACKED and view.answering:
        exited_unseen = _exited_before_containerd(ev, view)
        if exited_unseen is not None and not sandbox:
            up = (policy.now or 0.0) - (view.containerd_started_at or 0.0)
            if mode == Mode.GC and up < policy.min_age:
                note = f"containerd is up for {up:.0f}s only (< --min-age): left to it for now"
                return Decision(
                    Kind.STOPPED, Action.KEEP, exited_unseen, (*exit_note, note), owner=owner
                )
            return Decision(
                Kind.LEAKED,
                Action.DELETE_VIA_CONTAINERD,
                f"{exited_unseen}; deleted through containerd's API",
                exit_note,
                owner=owner,
            )
    if owner in (Owner.TRACKED, Owner.RECORD_ONLY):
        reason = f"task exited; {view.describe()} has its record: kept for its owner"
        return Decision(Kind.STOPPED, Action.KEEP, reason, exit_note, owner=owner)
    if owner == Owner.SHIMCTL:
        reason = "task exited; started by `shimctl start`: kept for `shimctl delete`"
        return Decision(Kind.STOPPED, Action.KEEP, reason, exit_note, owner=owner)
    return Decision(
        Kind.STOPPED,
        Action.KEEP,
        "task exited but was not deleted: kept for its owner",
        exit_note,
        owner=owner,
    )


def _exited_before_containerd(ev: BundleEvidence, view: OwnerView) -> str | None:
    """Why the exit was never delivered, if the task exited before containerd started
    (containerd subscribes to a shim's events only once it runs: an earlier exit is lost)."""
    started = view.containerd_started_at
    exited = ev.exited_at
    if exited is None:
        record = view.task(ev)
        exited = record.exited_at if record else None
    if started is None or exited is None or exited >= started:
        return None
    return (
        f"task exited at {_when(exited)}, before containerd started at {_when(started)}: "
        "containerd never saw the exit (containerd #6771)"
    )


def _created(
    ev: BundleEvidence, view: OwnerView, owner: Owner, mode: Mode, policy: Policy
) -> Decision:
    """A task created and never started. Stuck when it is older than containerd's start
    (its creator died with containerd) or, with containerd not answering, than --min-age."""
    started = view.containerd_started_at if view.answering else None
    created_at = (policy.now or 0.0) - ev.age
    if started is not None and created_at >= started:
        reason = "task created, not started yet (after containerd started: its client may start it)"
        return Decision(Kind.RUNNING, Action.KEEP, reason, owner=owner)
    if mode == Mode.GC and ev.age < policy.min_age:
        reason = "task created, not started yet (younger than --min-age)"
        return Decision(Kind.RUNNING, Action.KEEP, reason, owner=owner)
    reason = f"task created but never started (pids {ev.task_pids})"
    if started is not None:
        reason += f", before containerd started at {_when(started)}: its creator is gone"
    if mode != Mode.GC:
        return Decision(Kind.CREATED, Action.REPORT, reason, owner=owner)
    if not policy.delete_created:
        return Decision(
            Kind.CREATED,
            Action.REPORT,
            reason,
            ("deleted only with `gc --delete-created`",),
            owner=owner,
        )
    if owner == Owner.TRACKED and view.answering:
        return Decision(Kind.CREATED, Action.DELETE_VIA_CONTAINERD, reason, owner=owner)
    if owner == Owner.NO_RECORD:
        return Decision(Kind.CREATED, Action.STOP_TASK, reason, owner=owner, recheck_no_record=True)
    note = f"owner {owner}: containerd cannot delete it and it may be wanted: left"
    return Decision(Kind.CREATED, Action.REPORT, reason, (note,), owner=owner)


def _orphaned(ev: BundleEvidence, mode: Mode, policy: Policy) -> Decision:
    reason = (
        f"task {ev.task_status or 'present'} with pids {ev.task_pids}, but containerd has no "
        "record of it: no client can stop it"
    )
    if mode == Mode.GC and policy.stop_orphaned:
        return Decision(
            Kind.ORPHANED, Action.STOP_TASK, reason, owner=Owner.NO_RECORD, recheck_no_record=True
        )
    notes = ("stopped only with `gc --stop-orphaned`",) if mode == Mode.GC else ()
    return Decision(Kind.ORPHANED, Action.REPORT, reason, notes, owner=Owner.NO_RECORD)


def _exit_note(ev: BundleEvidence) -> tuple[str, ...]:
    if ev.exit_status is None:
        return ()
    at = f" at {_when(ev.exited_at)}" if ev.exited_at else ""
    return (f"exit status {ev.exit_status}{at}",)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
