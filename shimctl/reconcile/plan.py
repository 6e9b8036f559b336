"""Decide what each command does with the evidence: a pure function of the evidence and the
command's options (mode, --min-age, --kill-hung), returning one frozen Decision per item.

gc is strict (acts only on provable garbage older than --min-age, keeps stopped tasks for their
owner); load follows containerd's manager rule (containerd commit 46773c3) plus shimctl's safe
fixes: a hung or live shim's bundle is never deleted under it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import NamedTuple

from shimctl.models.findings import Action, Kind, Mode, Owner, ProbeResult
from shimctl.node.sockets import socket_file
from shimctl.reconcile.evidence import BundleEvidence, Inventory, Item, Leftover

# A shim's socket refuses connections between its bind and its listen; one younger than this
# may belong to a shim that is starting, whatever --min-age says.
STALE_SOCKET_MIN_AGE = 2.0

# What gc does with a leftover that is provably garbage.
_CLEANUP = {
    Kind.ORPHAN_WORKDIR: Action.REMOVE,
    Kind.STALE_HIDDEN: Action.REMOVE,
    Kind.STALE_SOCKET: Action.REMOVE,
    Kind.ORPHAN_PROCESS: Action.SHUTDOWN,
}


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


@dataclass(frozen=True, slots=True)
class Policy:
    """A command's options that change decisions."""

    min_age: float = 0.0  # gc acts only on older items
    kill_hung: bool = False
    stop_orphaned: bool = False  # gc stops tasks containerd has no record of
    delete_created: bool = False  # gc deletes tasks stuck in created
    remove_foreign_sockets: bool = False  # gc removes stale sockets not provably this containerd's


class Planned(NamedTuple):
    item: Item
    decision: Decision


def plan(
    inventory: Inventory,
    *,
    mode: Mode,
    min_age: float = 0.0,
    kill_hung: bool = False,
    stop_orphaned: bool = False,
    delete_created: bool = False,
) -> list[Planned]:
    return plan_with(inventory, mode, Policy(min_age, kill_hung, stop_orphaned, delete_created))


def plan_with(inventory: Inventory, mode: Mode, policy: Policy) -> list[Planned]:
    min_age, kill_hung = policy.min_age, policy.kill_hung
    groups: dict[str, list[BundleEvidence]] = defaultdict(list)
    for ev in inventory.bundles:
        if ev.boot is not None:
            groups[_socket_key(ev.boot.address)].append(ev)
    named = {(ev.namespace, ev.sandbox_of) for ev in inventory.bundles if ev.sandbox_of is not None}
    planned = [
        Planned(ev.item(), _decide(ev, groups, named, mode=mode, kill_hung=kill_hung))
        for ev in inventory.bundles
    ]
    planned += [Planned(left.item, _decide_leftover(left, policy)) for left in inventory.leftovers]
    return [Planned(item, _hold_young(item, d, mode, min_age)) for item, d in planned]


def _hold_young(item: Item, decision: Decision, mode: Mode, min_age: float) -> Decision:
    """Keep what is too young to be acted on: --min-age for gc, and a socket that may be a
    starting shim's for every command."""
    if not decision.action.changes_anything:
        return decision
    age = item.age_seconds or 0.0
    if mode == Mode.GC and age < min_age:
        note = f"younger than --min-age ({age:.0f}s): left"
    elif decision.kind == Kind.STALE_SOCKET and age < STALE_SOCKET_MIN_AGE:
        note = f"younger than {STALE_SOCKET_MIN_AGE:g}s: may be a shim starting"
    else:
        return decision
    return Decision(
        decision.kind,
        Action.KEEP,
        decision.reason,
        (*decision.notes, note),
        decision.shutdown_shim,
        decision.owner,
        decision.recheck_no_record,
    )


def _decide_leftover(left: Leftover, policy: Policy) -> Decision:
    action = _CLEANUP.get(left.kind, Action.REPORT) if left.garbage else Action.REPORT
    if left.foreign and action.changes_anything:
        # Another containerd's shim may be restarting on it: removed only when asked.
        if not policy.remove_foreign_sockets:
            flag = "gc --remove-foreign-sockets removes it"
            return Decision(left.kind, Action.REPORT, f"{left.reason} ({flag})")
        return Decision(left.kind, action, f"{left.reason} (--remove-foreign-sockets)")
    return Decision(left.kind, action, left.reason)


def _socket_key(address: str) -> str:
    return socket_file(address) or address


def _evidence_notes(ev: BundleEvidence) -> tuple[str, ...]:
    notes = [n for n in (ev.runtime_error, ev.address_error) if n]
    if ev.derived_address:
        notes.append("no address or bootstrap.json: reached at the address its shim derives")
    return tuple(notes)


def _decide(
    ev: BundleEvidence,
    groups: dict[str, list[BundleEvidence]],
    named: set[tuple[str, str]],
    *,
    mode: Mode,
    kill_hung: bool,
) -> Decision:
    notes = _evidence_notes(ev)
    # Unsafe first: an unreadable bundle (its shim unknown) or an invalid name is reported,
    # never deleted unseen.
    if ev.unsafe or ev.entries is None:
        return Decision(Kind.UNSAFE, Action.REPORT, ev.unsafe or "bundle dir is unreadable", notes)
    if not ev.entries:
        return Decision(Kind.EMPTY, Action.DELETE_BUNDLE, "bundle dir is empty", notes)

    if ev.probe == ProbeResult.ANSWERED:
        return _decide_answered(ev, notes, groups, named, mode=mode)

    if ev.probe == ProbeResult.UNRESPONSIVE or ev.live_process is not None:
        reason = (
            f"shim does not answer: {ev.probe_error}"
            if ev.probe == ProbeResult.UNRESPONSIVE
            else f"shim process {ev.shim_pid} is alive but refuses connections"
        )
        # Only a process found by its own argv (this bundle's id or cwd) is ever killed, never
        # a pid a half-answering shim named in Connect.
        if not kill_hung:
            return Decision(Kind.HUNG, Action.REPORT, reason, notes)
        if ev.live_process is None:
            notes += ("no shim process of this bundle was found: nothing to kill",)
            return Decision(Kind.HUNG, Action.REPORT, reason, notes)
        return Decision(Kind.HUNG, Action.KILL, reason, notes)

    usable_runtime = ev.runtime is not None and ev.runtime_error is None
    return Decision(
        Kind.DEAD if usable_runtime else Kind.UNKNOWN_RUNTIME,
        Action.DELETE_DEAD,
        f"no shim answers and no shim process is alive ({ev.probe_error})",
        notes,
    )


def _decide_answered(
    ev: BundleEvidence,
    notes: tuple[str, ...],
    groups: dict[str, list[BundleEvidence]],
    named: set[tuple[str, str]],
    *,
    mode: Mode,
) -> Decision:
    assert ev.boot is not None
    group = groups[_socket_key(ev.boot.address)]
    sharers = [other for other in group if other is not ev]
    # A sandbox is kept for its members: bundles that name it or share its shim. A CRI
    # sandbox spec with no task and no member is a leaked pod sandbox, cleaned like any leak.
    is_sandbox = (ev.namespace, ev.id) in named
    if sharers and ev.sandbox_of is None and not _spec_member(ev, sharers):
        is_sandbox = True
    # A shared shim is never shut down while another of its bundles has a task.
    shutdown = ev.sandbox_of is None and not any(o.has_task for o in sharers)

    def decided(kind: Kind, action: Action, reason: str) -> Decision:
        return Decision(kind, action, reason, notes, shutdown)

    if ev.has_task and ev.task_status == "stopped" and not ev.task_pids:
        if mode == Mode.LOAD:
            return decided(
                Kind.LEAKED,
                Action.DELETE_TASK,
                "manager rule: the task has no processes (exited, not deleted)",
            )
        return decided(
            Kind.STOPPED, Action.KEEP, "task exited but was not deleted: kept for its owner"
        )
    if ev.has_task:
        if mode == Mode.LOAD and not ev.task_pids:
            return decided(
                Kind.LEAKED, Action.DELETE_TASK, "manager rule: the task has no processes"
            )
        return decided(
            Kind.RUNNING,
            Action.KEEP,
            f"task {ev.task_status or 'present'} with pids {ev.task_pids}",
        )
    if is_sandbox:
        return decided(Kind.SANDBOX, Action.KEEP, "sandbox: other bundles use its shim")
    return decided(Kind.LEAKED, Action.DELETE_TASK, "shim answers but has no task")


def _spec_member(ev: BundleEvidence, sharers: list[BundleEvidence]) -> bool:
    """A bundle sharing a shim is a member (not the sandbox) if some sharer is the sandbox."""
    return any(o.spec_says_sandbox() for o in sharers) and not ev.spec_says_sandbox()
