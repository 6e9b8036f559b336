"""The planner with containerd's records as evidence: issue's table, state by state, over
hand-built evidence and hand-built records (API while containerd answers, meta.db while it is
stopped, unknown). Pure: no root, no shim, no process."""

from __future__ import annotations

from typing import Any

import pytest

from shimctl.models.findings import Action, Kind, Mode, Owner
from shimctl.node.processes import ProcessRef
from shimctl.reconcile.evidence import BundleEvidence, Inventory
from shimctl.reconcile.plan import Decision, plan
from shimctl.records.model import (
    ContainerRecord,
    NamespaceRecords,
    OwnerRecords,
    SandboxRecord,
    Source,
    TaskRecord,
    frozen_map,
    unknown,
)
from shimctl.shim.bootstrap import Bootstrap
from tests.unit.reconcile.test_plan import NS, OLD, address, bundle, running

NOW = 1_800_000_000.0
CONTAINERD_START = NOW - 2 * OLD  # containerd up longer than any --min-age here
MIN_AGE = 300.0
RESTARTED = NOW - 600  # containerd started again after the created task's create


def stopped(id: str, exited_at: float = NOW - OLD, **kw: Any) -> BundleEvidence:
    return bundle(
        id, has_task=True, task_status="stopped", exit_status=3, exited_at=exited_at, **kw
    )


def created(id: str, **kw: Any) -> BundleEvidence:
    return bundle(id, has_task=True, task_pids=[55], task_status="created", **kw)


def records(
    *,
    containers: tuple[str, ...] = (),
    tasks: tuple[str, ...] = (),
    sandboxes: tuple[str, ...] = (),
    source: Source = Source.API,
    labels: dict[str, dict[str, str]] | None = None,
    sandbox_ids: dict[str, str] | None = None,
    started: float = CONTAINERD_START,
) -> OwnerRecords:
    labels, sandbox_ids = labels or {}, sandbox_ids or {}
    ns = NamespaceRecords(
        NS,
        containers=frozen_map(
            {
                c: ContainerRecord(
                    c,
                    "io.containerd.runc.v2",
                    frozen_map(labels.get(c, {})),
                    sandbox_id=sandbox_ids.get(c, ""),
                )
                for c in containers
            }
        ),
        tasks=frozen_map({t: TaskRecord(t, 42, "stopped") for t in tasks}),
        sandboxes=frozen_map({s: SandboxRecord(s, "io.containerd.runc.v2") for s in sandboxes}),
    )
    api = source is Source.API
    return OwnerRecords(
        source,
        frozen_map({NS: ns}),
        tasks_known=api,
        sandboxes_known=True,
        containerd=ProcessRef(777, started) if api else None,
        version="1.6.20" if api else "",
    )


def decide(
    *bundles: BundleEvidence, owner: OwnerRecords | None, mode: Mode = Mode.GC, **kw: Any
) -> dict[str, Decision]:
    kw.setdefault("min_age", MIN_AGE)
    planned = plan(Inventory(list(bundles), [], owner), mode=mode, now=NOW, **kw)
    return {p.item.id: p.decision for p in planned}


def one(ev: BundleEvidence, owner: OwnerRecords | None, **kw: Any) -> Decision:
    return decide(ev, owner=owner, **kw)[ev.id]


LEAK = (Kind.LEAKED, Action.DELETE_TASK)

# (name, evidence, records, gc options, expected (kind, action, owner))
OWNER_CASES: list[tuple[str, BundleEvidence, OwnerRecords | None, dict[str, Any], Any]] = [
    (
        "stopped, record gone (API): garbage",
        stopped("c"),
        records(),
        {},
        (*LEAK, Owner.NO_RECORD),
    ),
    (
        "stopped, record gone (meta.db): garbage",
        stopped("c"),
        records(source=Source.METADB),
        {},
        (*LEAK, Owner.NO_RECORD),
    ),
    (
        "stopped, record present, exit seen: kept for its owner",
        stopped("c"),
        records(containers=("c",), tasks=("c",)),
        {},
        (Kind.STOPPED, Action.KEEP, Owner.TRACKED),
    ),
    (
        "stopped, record present, containerd stopped: kept",
        stopped("c", exited_at=CONTAINERD_START - 10),
        records(containers=("c",), source=Source.METADB),
        {},
        (Kind.STOPPED, Action.KEEP, Owner.RECORD_ONLY),
    ),
    (
        "containerd #6771: exited before containerd started",
        stopped("c", exited_at=CONTAINERD_START - 10),
        records(containers=("c",), tasks=("c",)),
        {},
        (Kind.LEAKED, Action.DELETE_VIA_CONTAINERD, Owner.TRACKED),
    ),
    (
        "containerd #6771, but containerd is younger than --min-age: left",
        stopped("c", exited_at=NOW - 1000),
        records(containers=("c",), tasks=("c",), started=NOW - 60),
        {},
        (Kind.STOPPED, Action.KEEP, Owner.TRACKED),
    ),
    (
        "stopped, owner unknown: kept as before records",
        stopped("c"),
        unknown("missing", "no meta.db"),
        {},
        (Kind.STOPPED, Action.KEEP, Owner.UNKNOWN),
    ),
    (
        "stopped, no records read at all",
        stopped("c"),
        None,
        {},
        (Kind.STOPPED, Action.KEEP, Owner.UNKNOWN),
    ),
    (
        "stopped, started by shimctl: never garbage for want of a record",
        stopped("c", shimctl_started=True),
        records(),
        {},
        (Kind.STOPPED, Action.KEEP, Owner.SHIMCTL),
    ),
    (
        "running, record gone: orphaned, reported",
        running("c"),
        records(),
        {},
        (Kind.ORPHANED, Action.REPORT, Owner.NO_RECORD),
    ),
    (
        "running, record gone, --stop-orphaned",
        running("c"),
        records(),
        {"stop_orphaned": True},
        (Kind.ORPHANED, Action.STOP_TASK, Owner.NO_RECORD),
    ),
    (
        "running, started by shimctl: not an orphan",
        running("c", shimctl_started=True),
        records(),
        {"stop_orphaned": True},
        (Kind.RUNNING, Action.KEEP, Owner.SHIMCTL),
    ),
    (
        "running, tracked",
        running("c"),
        records(containers=("c",), tasks=("c",)),
        {"stop_orphaned": True},
        (Kind.RUNNING, Action.KEEP, Owner.TRACKED),
    ),
    (
        "created before containerd started: reported",
        created("c"),
        records(containers=("c",), tasks=("c",), started=RESTARTED),
        {},
        (Kind.CREATED, Action.REPORT, Owner.TRACKED),
    ),
    (
        "created before containerd started, --delete-created: through containerd",
        created("c"),
        records(containers=("c",), tasks=("c",), started=RESTARTED),
        {"delete_created": True},
        (Kind.CREATED, Action.DELETE_VIA_CONTAINERD, Owner.TRACKED),
    ),
    (
        "created, no record, --delete-created: stopped through its shim",
        created("c"),
        records(started=RESTARTED),
        {"delete_created": True},
        (Kind.CREATED, Action.STOP_TASK, Owner.NO_RECORD),
    ),
    (
        "created after containerd started: its client may start it",
        created("c", age=60.0),
        records(containers=("c",), tasks=("c",), started=NOW - 3600),
        {"delete_created": True, "min_age": 30.0},
        (Kind.RUNNING, Action.KEEP, Owner.TRACKED),
    ),
    (
        "created, owner unknown, younger than --min-age",
        created("c", age=60.0),
        None,
        {"delete_created": True},
        (Kind.RUNNING, Action.KEEP, Owner.UNKNOWN),
    ),
    (
        "created, owner unknown, --delete-created: left (nobody can say it is stuck for good)",
        created("c"),
        None,
        {"delete_created": True},
        (Kind.CREATED, Action.REPORT, Owner.UNKNOWN),
    ),
    (
        "no task, record present: still the #6860 leak",
        bundle("c"),
        records(containers=("c",)),
        {},
        (*LEAK, Owner.RECORD_ONLY),
    ),
]


@pytest.mark.parametrize(
    ("ev", "owner", "options", "expected"),
    [c[1:] for c in OWNER_CASES],
    ids=[c[0] for c in OWNER_CASES],
)
def test_owner_table(
    ev: BundleEvidence, owner: OwnerRecords | None, options: dict[str, Any], expected: Any
) -> None:
    d = one(ev, owner, **options)
    assert (d.kind, d.action, d.owner) == expected


def test_garbage_for_want_of_a_record_is_rechecked_and_keeps_its_exit() -> None:
    d = one(stopped("c"), records())
    assert d.recheck_no_record
    assert any(n.startswith("exit status 3 at ") for n in d.notes)
    assert one(running("c"), records(), stop_orphaned=True).recheck_no_record
    # Through containerd's API: containerd itself checks, nothing to re-check here.
    assert not one(
        stopped("c", exited_at=CONTAINERD_START - 1), records(containers=("c",), tasks=("c",))
    ).recheck_no_record


def test_orphans_and_created_are_never_acted_on_by_list_or_load() -> None:
    for mode in (Mode.LIST, Mode.LOAD):
        d = one(running("c"), records(), mode=mode, stop_orphaned=True)
        assert (d.kind, d.action) == (Kind.ORPHANED, Action.REPORT)
    d = one(created("c"), records(started=RESTARTED), mode=Mode.LIST, delete_created=True)
    assert (d.kind, d.action) == (Kind.CREATED, Action.REPORT)


def test_load_follows_the_manager_rule_whatever_the_records() -> None:
    d = one(stopped("c"), records(containers=("c",), source=Source.METADB), mode=Mode.LOAD)
    assert (d.kind, d.action) == LEAK


def test_load_keeps_what_the_sandbox_store_has_as_the_manager_does() -> None:
    owner = records(sandboxes=("pod",), source=Source.METADB)
    d = one(bundle("pod"), owner, mode=Mode.LOAD)
    assert (d.kind, d.action) == (Kind.SANDBOX, Action.KEEP)
    assert one(bundle("pod"), records(source=Source.METADB), mode=Mode.LOAD).action == (
        Action.DELETE_TASK
    )
    # gc does not: a sandbox record alone keeps no runc pod shim (see below).
    assert one(bundle("pod"), owner).action == Action.DELETE_TASK


def test_kept_stopped_names_its_owner() -> None:
    d = one(stopped("c"), records(containers=("c",), tasks=("c",)))
    assert "containerd 1.6.20 (pid 777)" in d.reason


def test_6771_is_never_applied_to_a_sandbox() -> None:
    shared = Bootstrap(address("pod"))
    pod = stopped("pod", exited_at=CONTAINERD_START - 5, boot=shared)
    member = running("ctr", boot=shared, sandbox_of="pod")
    owner = records(containers=("pod", "ctr"), tasks=("pod", "ctr"))
    d = decide(pod, member, owner=owner)
    assert (d["pod"].kind, d["pod"].action) == (Kind.STOPPED, Action.KEEP)


# -- sandbox truth from the records ------------------------------------------------------------

CRI_SANDBOX = {"io.cri-containerd.kind": "sandbox"}
CRI_CONTAINER = {"io.cri-containerd.kind": "container"}


def test_records_tell_the_sandbox_of_a_shared_shim() -> None:
    """Two bundles on one shim, no sandbox file and no spec: the records' CRI labels say which
    is the sandbox, so the member with no task is a leak and not taken for the sandbox."""
    shared = Bootstrap(address("pod"))
    pod = running("pod", boot=shared)
    ctr = bundle("ctr", boot=shared)
    owner = records(
        containers=("pod", "ctr"),
        tasks=("pod",),
        labels={"pod": CRI_SANDBOX, "ctr": CRI_CONTAINER},
    )
    d = decide(pod, ctr, owner=owner)
    assert (d["ctr"].kind, d["ctr"].action) == LEAK
    assert d["ctr"].shutdown_shim is False  # the pod's task still runs on that shim
    assert (d["pod"].kind, d["pod"].action) == (Kind.RUNNING, Action.KEEP)


def test_member_named_by_its_record_keeps_the_sandbox() -> None:
    """1.7+ records name a container's sandbox: the sandbox with no task is kept while that
    member's task runs, even on another shim and with no sandbox file."""
    pod = bundle("pod", boot=Bootstrap(address("pod")))
    ctr = running("ctr", boot=Bootstrap(address("ctr")))
    owner = records(containers=("pod", "ctr"), tasks=("ctr",), sandbox_ids={"ctr": "pod"})
    d = decide(pod, ctr, owner=owner)
    assert (d["pod"].kind, d["pod"].action) == (Kind.SANDBOX, Action.KEEP)


def test_a_sandbox_record_alone_keeps_no_runc_pod_shim() -> None:
    """containerd 2.1 keeps these leaks (its sandbox store still has the pod): a runc pod
    shim with no task and no member is cleaned, and CRI then removes the pod normally."""
    pod = bundle("pod")
    owner = records(sandboxes=("pod",), containers=("pod",), labels={"pod": CRI_SANDBOX})
    d = one(pod, owner)
    assert (d.kind, d.action) == LEAK


def test_sandbox_follows_members_in_one_run() -> None:
    shared = Bootstrap(address("pod"))
    pod = bundle("pod", boot=shared)
    leaked = bundle("a", boot=shared, sandbox_of="pod")
    gone = stopped("b", boot=shared, sandbox_of="pod")
    d = decide(pod, leaked, gone, owner=records(containers=("pod",)))
    assert (d["b"].kind, d["b"].action) == LEAK  # stopped, its record gone
    assert (d["pod"].kind, d["pod"].action) == LEAK and d["pod"].after_members
    # One member too young to touch: the sandbox stays with it.
    young = bundle("a", boot=shared, sandbox_of="pod", age=10.0)
    d = decide(pod, young, gone, owner=records(containers=("pod",)))
    assert (d["pod"].kind, d["pod"].action) == (Kind.SANDBOX, Action.KEEP)
    assert d["a"].action == Action.KEEP


def test_a_stopped_sandbox_is_kept_while_a_member_runs() -> None:
    shared = Bootstrap(address("pod"))
    pod = stopped("pod", boot=shared)
    ctr = running("ctr", boot=shared, sandbox_of="pod")
    d = decide(pod, ctr, owner=records(containers=("ctr",), tasks=("ctr",)))
    assert d["pod"].action == Action.KEEP
    assert d["pod"].shutdown_shim is False
