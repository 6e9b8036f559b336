"""Decide what each command does with what `inspect` found.

gc is strict (acts only on provable garbage older than --min-age, keeps stopped tasks for their
owner); load follows containerd's manager rule (commit 46773c3) plus shimctl's safe fixes: a hung
or live shim's bundle is never deleted under it.
"""

from __future__ import annotations

from collections import defaultdict

from shimctl.models.findings import Action, Finding, Kind
from shimctl.node.sockets import socket_file
from shimctl.reconcile.evidence import ANSWERED, UNRESPONSIVE, BundleEvidence, Inventory

LIST, LOAD, GC = "list", "load", "gc"
KEEP_ACTIONS = (Action.KEEP, Action.REPORT)
# A shim's socket refuses connections between its bind and its listen; one younger than this
# may belong to a shim that is starting, whatever --min-age says.
STALE_SOCKET_MIN_AGE = 2.0


def plan(
    inventory: Inventory, *, mode: str, min_age: float = 0.0, kill_hung: bool = False
) -> list[Finding]:
    groups: dict[str, list[BundleEvidence]] = defaultdict(list)
    for ev in inventory.bundles:
        if ev.boot is not None:
            groups[_socket_key(ev.boot.address)].append(ev)
    named = {(ev.namespace, ev.sandbox_of) for ev in inventory.bundles if ev.sandbox_of is not None}
    findings = [
        _decide(ev, groups, named, mode=mode, kill_hung=kill_hung) for ev in inventory.bundles
    ]
    # The inventory is made for this one plan: its findings are taken, not copied.
    findings += inventory.others
    for f in findings:
        if f.action in KEEP_ACTIONS:
            continue
        age = f.age_seconds or 0.0
        if mode == GC and age < min_age:
            f.notes.append(f"younger than --min-age ({age:.0f}s): left")
            f.action = Action.KEEP
        elif f.kind == Kind.STALE_SOCKET and age < STALE_SOCKET_MIN_AGE:
            f.notes.append(f"younger than {STALE_SOCKET_MIN_AGE:g}s: may be a shim starting")
            f.action = Action.KEEP
    return findings


def _socket_key(address: str) -> str:
    return socket_file(address) or address


def _decide(
    ev: BundleEvidence,
    groups: dict[str, list[BundleEvidence]],
    named: set[tuple[str, str]],
    *,
    mode: str,
    kill_hung: bool,
) -> Finding:
    f = Finding(
        kind=Kind.EMPTY,
        namespace=ev.namespace,
        id=ev.id,
        path=str(ev.path),
        reason="",
        shim_pid=ev.shim_pid,
        task_pids=list(ev.task_pids),
        task_status=ev.task_status,
        runtime=ev.runtime,
        address=ev.boot.address if ev.boot else None,
        api_version=ev.boot.version if ev.boot else None,
        protocol=ev.boot.protocol if ev.boot else None,
        age_seconds=round(ev.age, 3),
        sandbox=ev.sandbox_of,
    )
    if ev.runtime_error:
        f.notes.append(ev.runtime_error)
    if ev.address_error:
        f.notes.append(ev.address_error)
    if ev.derived_address:
        f.notes.append("no address or bootstrap.json: reached at the address its shim derives")

    # Unsafe first: an unreadable bundle (its shim unknown) or an invalid name is reported,
    # never deleted unseen.
    if ev.unsafe or ev.entries is None:
        f.kind, f.action = Kind.UNSAFE, Action.REPORT
        f.reason = ev.unsafe or "bundle dir is unreadable"
        return f
    if not ev.entries:
        f.kind, f.action = Kind.EMPTY, Action.DELETE_BUNDLE
        f.reason = "bundle dir is empty"
        return f

    if ev.probe == ANSWERED:
        return _decide_answered(ev, f, groups, named, mode=mode)

    if ev.probe == UNRESPONSIVE or ev.live_process is not None:
        f.kind = Kind.HUNG
        f.reason = (
            f"shim does not answer: {ev.probe_error}"
            if ev.probe == UNRESPONSIVE
            else f"shim process {ev.shim_pid} is alive but refuses connections"
        )
        # Only a process found by its own argv (this bundle's id or cwd) is ever killed, never
        # a pid a half-answering shim named in Connect.
        f.action = Action.KILL if kill_hung and ev.live_process is not None else Action.REPORT
        if kill_hung and ev.live_process is None:
            f.notes.append("no shim process of this bundle was found: nothing to kill")
        return f

    usable_runtime = ev.runtime is not None and ev.runtime_error is None
    f.kind = Kind.DEAD if usable_runtime else Kind.UNKNOWN_RUNTIME
    f.action = Action.DELETE_DEAD
    f.reason = f"no shim answers and no shim process is alive ({ev.probe_error})"
    return f


def _decide_answered(
    ev: BundleEvidence,
    f: Finding,
    groups: dict[str, list[BundleEvidence]],
    named: set[tuple[str, str]],
    *,
    mode: str,
) -> Finding:
    assert ev.boot is not None
    group = groups[_socket_key(ev.boot.address)]
    sharers = [other for other in group if other is not ev]
    # A sandbox is kept for its members: bundles that name it or share its shim. A CRI
    # sandbox spec with no task and no member is a leaked pod sandbox, cleaned like any leak.
    is_sandbox = (ev.namespace, ev.id) in named
    if sharers and ev.sandbox_of is None and not _spec_member(ev, sharers):
        is_sandbox = True
    # A shared shim is never shut down while another of its bundles has a task.
    f.shutdown_shim = ev.sandbox_of is None and not any(o.has_task for o in sharers)

    if ev.has_task and ev.task_status == "stopped" and not ev.task_pids:
        if mode == LOAD:
            f.kind, f.action = Kind.LEAKED, Action.DELETE_TASK
            f.reason = "manager rule: the task has no processes (exited, not deleted)"
        else:
            f.kind, f.action = Kind.STOPPED, Action.KEEP
            f.reason = "task exited but was not deleted: kept for its owner"
        return f
    if ev.has_task:
        f.kind, f.action = Kind.RUNNING, Action.KEEP
        f.reason = f"task {ev.task_status or 'present'} with pids {ev.task_pids}"
        if mode == LOAD and not ev.task_pids:
            f.kind, f.action = Kind.LEAKED, Action.DELETE_TASK
            f.reason = "manager rule: the task has no processes"
        return f
    if is_sandbox:
        f.kind, f.action = Kind.SANDBOX, Action.KEEP
        f.reason = "sandbox: other bundles use its shim"
        return f
    f.kind, f.action = Kind.LEAKED, Action.DELETE_TASK
    f.reason = "shim answers but has no task"
    return f


def _spec_member(ev: BundleEvidence, sharers: list[BundleEvidence]) -> bool:
    """A bundle sharing a shim is a member (not the sandbox) if some sharer is the sandbox."""
    return any(o.spec_says_sandbox() for o in sharers) and not ev.spec_says_sandbox()
