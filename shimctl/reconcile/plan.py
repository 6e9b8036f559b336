"""Decide what each command does with the evidence: a pure function of the evidence (the
bundles, the leftovers, containerd's records) and the command's options, returning one frozen
Decision per item.

gc is strict (acts only on provable garbage older than --min-age, keeps a stopped task whose
record containerd has for its owner); load follows containerd's manager rule (containerd commit
46773c3) plus shimctl's safe fixes: a hung or live shim's bundle is never deleted under it.
What an answering shim's task means is decided in plan_task.py; here: the groups of bundles
one shim serves, pod sandboxes and their members, --min-age, leftovers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from shimctl.models.findings import Action, Kind, Mode, ProbeResult
from shimctl.node.sockets import socket_file
from shimctl.reconcile.evidence import BundleEvidence, Inventory, Item, Leftover
from shimctl.reconcile.ownership import OwnerView
from shimctl.reconcile.plan_task import Decision, Policy, decide_task

__all__ = ["STALE_SOCKET_MIN_AGE", "Decision", "Planned", "Policy", "plan", "plan_with"]

# A shim's socket refuses connections between its bind and its listen; one younger than this
# may belong to a shim that is starting, whatever --min-age says.
STALE_SOCKET_MIN_AGE = 2.0

# What gc does with a leftover that is provably garbage.
_CLEANUP = {
    Kind.ORPHAN_WORKDIR: Action.REMOVE,
    Kind.STALE_HIDDEN: Action.REMOVE,
    Kind.STALE_SOCKET: Action.REMOVE,
    Kind.ORPHAN_PROCESS: Action.SHUTDOWN,
    Kind.ORPHAN_RUNC_STATE: Action.RUNC_DELETE,
}


_UNDECIDED = Decision(Kind.SANDBOX, Action.KEEP, "not decided yet")


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
    now: float | None = None,
) -> list[Planned]:
    policy = Policy(min_age, kill_hung, stop_orphaned, delete_created, now=now)
    return plan_with(inventory, mode, policy)


def plan_with(inventory: Inventory, mode: Mode, policy: Policy) -> list[Planned]:
    if policy.now is None:
        policy = replace(policy, now=time.time())
    view = OwnerView(inventory.owner)
    bundles = inventory.bundles
    groups: dict[str, list[BundleEvidence]] = defaultdict(list)
    for ev in bundles:
        if ev.boot is not None:
            groups[_socket_key(ev.boot.address)].append(ev)
    sandbox_of = {id(ev): ev.sandbox_of or view.sandbox_of(ev) for ev in bundles}
    naming: dict[tuple[str, str], list[BundleEvidence]] = defaultdict(list)
    for ev in bundles:
        if (name := sandbox_of[id(ev)]) is not None:
            naming[(ev.namespace, name)].append(ev)
    named = set(naming)
    sandboxes = {
        id(ev): _is_sandbox(ev, groups, named, view, sandbox_of)
        for ev in bundles
        if ev.boot is not None
    }

    decided: dict[int, Decision] = {}
    for ev in bundles:  # members and lone bundles first: a sandbox follows its members
        if not sandboxes.get(id(ev)):
            decision = _decide(ev, groups, view, mode, policy, sandbox_of)
            decided[id(ev)] = _hold_young(ev.item(), decision, mode, policy.min_age)
    for ev in bundles:
        if sandboxes.get(id(ev)):
            decision = _decide(ev, groups, view, mode, policy, sandbox_of, sandbox=True)
            decision = _hold_young(ev.item(), decision, mode, policy.min_age)
            members = _members(ev, groups, naming)
            # A member that is itself taken for a sandbox and not decided yet counts as kept.
            member_decisions = [decided.get(id(m), _UNDECIDED) for m in members]
            decided[id(ev)] = _follow_members(decision, member_decisions, mode)

    planned = [Planned(ev.item(), decided[id(ev)]) for ev in bundles]
    for left in inventory.leftovers:
        planned.append(
            Planned(
                left.item,
                _hold_young(left.item, _decide_leftover(left, policy), mode, policy.min_age),
            )
        )
    return planned


def _is_sandbox(
    ev: BundleEvidence,
    groups: dict[str, list[BundleEvidence]],
    named: set[tuple[str, str]],
    view: OwnerView,
    sandbox_of: dict[int, str | None],
) -> bool:
    """Does it serve as a pod sandbox for other bundles on this node? The records say what it
    is where they have it (CRI's kind label, the sandbox store); else bundles naming it, or
    a shared shim whose other bundles do not look like the sandbox (spec annotations)."""
    assert ev.boot is not None
    sharers = [o for o in groups[_socket_key(ev.boot.address)] if o is not ev]
    if (ev.namespace, ev.id) in named:
        return True
    if not sharers or sandbox_of[id(ev)] is not None:
        return False
    says = view.says_sandbox(ev)
    if says is not None:
        return says
    return not _spec_member(ev, sharers)


def _members(
    ev: BundleEvidence,
    groups: dict[str, list[BundleEvidence]],
    naming: dict[tuple[str, str], list[BundleEvidence]],
) -> list[BundleEvidence]:
    """The bundles a sandbox serves: those naming it, and the others its shim serves."""
    assert ev.boot is not None
    sharers = [o for o in groups[_socket_key(ev.boot.address)] if o is not ev]
    named_by = [o for o in naming.get((ev.namespace, ev.id), ()) if o is not ev]
    return list({id(o): o for o in [*sharers, *named_by]}.values())


def _follow_members(decision: Decision, members: Sequence[Decision], mode: Mode) -> Decision:
    """gc keeps a sandbox while any member is kept. When every member is cleaned in this run,
    gc cleans the sandbox in the same run, after them, so one run reaches the end state.
    list and load decide a sandbox on its own evidence (load as containerd's manager does)."""
    if mode != Mode.GC or not decision.action.changes_anything or not members:
        return decision
    if decision.action == Action.KILL:
        # --kill-hung on a pod's hung shim: its members hang with it (they are reported, no
        # shim of their own to kill); the kill runs their delete verbs first.
        return decision
    kept = [m for m in members if not m.action.changes_anything]
    if kept:
        note = f"a sandbox with {len(kept)} kept member(s): kept with them"
        if decision.kind == Kind.LEAKED:
            return replace(
                decision,
                kind=Kind.SANDBOX,
                action=Action.KEEP,
                reason="sandbox: other bundles use its shim",
                notes=(*decision.notes, note),
            )
        return replace(decision, action=Action.KEEP, notes=(*decision.notes, note))
    note = f"its {len(members)} member(s) are cleaned in this run: cleaned after them"
    return replace(decision, notes=(*decision.notes, note), shutdown_shim=True, after_members=True)


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
    return replace(decision, action=Action.KEEP, notes=(*decision.notes, note))


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
    view: OwnerView,
    mode: Mode,
    policy: Policy,
    sandbox_of: dict[int, str | None],
    *,
    sandbox: bool = False,
) -> Decision:
    notes = _evidence_notes(ev)
    owner = view.owner_of(ev) if ev.entries else None
    # Unsafe first: an unreadable bundle (its shim unknown) or an invalid name is reported,
    # never deleted unseen.
    if ev.unsafe or ev.entries is None:
        return Decision(Kind.UNSAFE, Action.REPORT, ev.unsafe or "bundle dir is unreadable", notes)
    if not ev.entries:
        return Decision(Kind.EMPTY, Action.DELETE_BUNDLE, "bundle dir is empty", notes)

    if ev.probe == ProbeResult.ANSWERED:
        assert ev.boot is not None
        sharers = [o for o in groups[_socket_key(ev.boot.address)] if o is not ev]
        # A shared shim is never shut down while another of its bundles has a task.
        shutdown = sandbox_of[id(ev)] is None and not any(o.has_task for o in sharers)
        decision = decide_task(ev, view, mode, policy, sandbox=sandbox)
        return replace(decision, notes=(*notes, *decision.notes), shutdown_shim=shutdown)

    if ev.probe == ProbeResult.UNRESPONSIVE or ev.live_process is not None:
        reason = (
            f"shim does not answer: {ev.probe_error}"
            if ev.probe == ProbeResult.UNRESPONSIVE
            else f"shim process {ev.shim_pid} is alive but refuses connections"
        )
        # Only a process found by its own argv (this bundle's id or cwd) is ever killed, never
        # a pid a half-answering shim named in Connect.
        if not policy.kill_hung:
            return Decision(Kind.HUNG, Action.REPORT, reason, notes, owner=owner)
        if ev.live_process is None:
            notes += ("no shim process of this bundle was found: nothing to kill",)
            return Decision(Kind.HUNG, Action.REPORT, reason, notes, owner=owner)
        return Decision(Kind.HUNG, Action.KILL, reason, notes, owner=owner)

    usable_runtime = ev.runtime is not None and ev.runtime_error is None
    return Decision(
        Kind.DEAD if usable_runtime else Kind.UNKNOWN_RUNTIME,
        Action.DELETE_DEAD,
        f"no shim answers and no shim process is alive ({ev.probe_error})",
        notes,
        owner=owner,
    )


def _spec_member(ev: BundleEvidence, sharers: list[BundleEvidence]) -> bool:
    """A bundle sharing a shim is a member (not the sandbox) if some sharer is the sandbox."""
    return any(o.spec_says_sandbox() for o in sharers) and not ev.spec_says_sandbox()
