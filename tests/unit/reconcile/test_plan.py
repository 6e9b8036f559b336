"""The planner over hand-built evidence: every kind, every mode, --min-age, --kill-hung,
sandbox groups and stale-socket age. Pure: no root, no shim, no process."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from shimctl.models.findings import Action, Kind, Mode, ProbeResult
from shimctl.node.processes import ProcessRef, ShimProcess
from shimctl.reconcile.evidence import BundleEvidence, Inventory, Item, Leftover
from shimctl.reconcile.plan import STALE_SOCKET_MIN_AGE, Decision, Planned, plan
from shimctl.shim.bootstrap import Bootstrap

NS = "default"
STATE = Path("/nonexistent/state/io.containerd.runtime.v2.task")
RUNC = "/usr/bin/containerd-shim-runc-v2"
OLD = 3600.0  # older than any --min-age used here
ALL_MODES = (Mode.LIST, Mode.LOAD, Mode.GC)


def address(key: str) -> str:
    return f"unix:///run/containerd/s/{key:0>64}"


def bundle(id: str, **kw: Any) -> BundleEvidence:
    """An answering shim with no task, unless told otherwise; its own socket."""
    fields: dict[str, Any] = {
        "namespace": NS,
        "id": id,
        "path": STATE / NS / id,
        "age": OLD,
        "entries": ["address", "config.json", "shim-binary-path"],
        "boot": Bootstrap(address(id)),
        "runtime": RUNC,
        "probe": ProbeResult.ANSWERED,
        "shim_pid": 100,
    }
    fields.update(kw)
    return BundleEvidence(**fields)


def running(id: str, **kw: Any) -> BundleEvidence:
    return bundle(id, has_task=True, task_pids=[42], task_status="running", **kw)


def dead(id: str, **kw: Any) -> BundleEvidence:
    kw.setdefault("probe_error", "connection refused")
    kw.setdefault("shim_pid", None)
    return bundle(id, probe=ProbeResult.REFUSED, **kw)


def live_shim(id: str) -> ShimProcess:
    return ShimProcess(
        ProcessRef(4242, 1.0), NS, id, "/run/containerd.sock", str(STATE / NS / id), ()
    )


def spec_bundle(tmp_path: Path, id: str, annotations: dict[str, str], **kw: Any) -> BundleEvidence:
    """A bundle whose config.json carries CRI annotations (read by the planner on demand)."""
    path = tmp_path / NS / id
    path.mkdir(parents=True)
    (path / "config.json").write_text(
        json.dumps({"ociVersion": "1.0.2", "annotations": annotations})
    )
    return bundle(id, path=path, **kw)


def cri_sandbox(tmp_path: Path, id: str, **kw: Any) -> BundleEvidence:
    notes = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": id}
    return spec_bundle(tmp_path, id, notes, **kw)


def cri_member(tmp_path: Path, id: str, sandbox: str, **kw: Any) -> BundleEvidence:
    notes = {
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": sandbox,
    }
    return spec_bundle(tmp_path, id, notes, **kw)


def decide(*bundles: BundleEvidence, mode: Mode = Mode.GC, **kw: Any) -> dict[str, Decision]:
    planned = plan(Inventory(list(bundles), []), mode=mode, **kw)
    return {p.item.id: p.decision for p in planned}


def kind_action(d: Decision) -> tuple[Kind, Action]:
    return d.kind, d.action


# -- every kind, every mode ------------------------------------------------------------------

LEAK = (Kind.LEAKED, Action.DELETE_TASK)

BUNDLE_CASES: list[tuple[str, BundleEvidence, dict[Mode, tuple[Kind, Action]]]] = [
    (
        "running task",
        running("c"),
        dict.fromkeys(ALL_MODES, (Kind.RUNNING, Action.KEEP)),
    ),
    (
        "created task: no processes yet (the manager rule deletes it on load)",
        bundle("c", has_task=True, task_status="created"),
        {
            Mode.LIST: (Kind.CREATED, Action.REPORT),
            Mode.LOAD: LEAK,
            Mode.GC: (Kind.CREATED, Action.REPORT),
        },
    ),
    (
        "stopped task: kept for its owner, except by load's manager rule",
        bundle("c", has_task=True, task_status="stopped"),
        {
            Mode.LIST: (Kind.STOPPED, Action.KEEP),
            Mode.LOAD: LEAK,
            Mode.GC: (Kind.STOPPED, Action.KEEP),
        },
    ),
    (
        "stopped status but processes left: running",
        bundle("c", has_task=True, task_pids=[7], task_status="stopped"),
        dict.fromkeys(ALL_MODES, (Kind.RUNNING, Action.KEEP)),
    ),
    ("answers, no task: containerd #6860", bundle("c"), dict.fromkeys(ALL_MODES, LEAK)),
    (
        "connects, never answers",
        bundle("c", probe=ProbeResult.UNRESPONSIVE, probe_error="deadline exceeded"),
        dict.fromkeys(ALL_MODES, (Kind.HUNG, Action.REPORT)),
    ),
    (
        "refuses, but its shim process lives",
        dead("c", live_process=live_shim("c"), shim_pid=4242),
        dict.fromkeys(ALL_MODES, (Kind.HUNG, Action.REPORT)),
    ),
    ("refuses, no process", dead("c"), dict.fromkeys(ALL_MODES, (Kind.DEAD, Action.DELETE_DEAD))),
    (
        "no shim-binary-path",
        dead("c", runtime=None, runtime_error="no shim-binary-path"),
        dict.fromkeys(ALL_MODES, (Kind.UNKNOWN_RUNTIME, Action.DELETE_DEAD)),
    ),
    (
        "shim binary not executable",
        dead("c", runtime_error="shim-binary-path: not executable"),
        dict.fromkeys(ALL_MODES, (Kind.UNKNOWN_RUNTIME, Action.DELETE_DEAD)),
    ),
    (
        "empty bundle dir",
        dead("c", entries=[], boot=None, runtime=None),
        dict.fromkeys(ALL_MODES, (Kind.EMPTY, Action.DELETE_BUNDLE)),
    ),
    (
        "unreadable bundle dir",
        dead("c", entries=None, unsafe="bundle dir is unreadable (Permission denied)"),
        dict.fromkeys(ALL_MODES, (Kind.UNSAFE, Action.REPORT)),
    ),
    (
        "unsafe even though it answers with no task",
        bundle("c", unsafe="rootfs is a symlink to /"),
        dict.fromkeys(ALL_MODES, (Kind.UNSAFE, Action.REPORT)),
    ),
]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize(
    ("ev", "expected"), [c[1:] for c in BUNDLE_CASES], ids=[c[0] for c in BUNDLE_CASES]
)
def test_each_bundle_kind_in_each_mode(
    ev: BundleEvidence, expected: dict[Mode, tuple[Kind, Action]], mode: Mode
) -> None:
    assert kind_action(decide(ev, mode=mode)["c"]) == expected[mode]


def test_every_kind_is_covered() -> None:
    bundle_kinds = {k for _, _, by_mode in BUNDLE_CASES for k, _ in by_mode.values()}
    leftover_kinds = {kind for _, kind, _, _ in LEFTOVER_CASES}
    from tests.unit.reconcile.test_plan_owner import OWNER_CASES

    owner_kinds = {expected[0] for *_, expected in OWNER_CASES}
    assert bundle_kinds | leftover_kinds | owner_kinds | {Kind.SANDBOX} == set(Kind)


LEFTOVER_CASES = [
    ("work dir with no bundle", Kind.ORPHAN_WORKDIR, True, Action.REMOVE),
    ("interrupted atomic delete", Kind.STALE_HIDDEN, True, Action.REMOVE),
    ("refusing socket no bundle names", Kind.STALE_SOCKET, True, Action.REMOVE),
    ("orphan shim answering with no task", Kind.ORPHAN_PROCESS, True, Action.SHUTDOWN),
    ("orphan shim with a task", Kind.ORPHAN_PROCESS, False, Action.REPORT),
    ("runc state whose bundle is gone", Kind.ORPHAN_RUNC_STATE, True, Action.RUNC_DELETE),
    ("symlinked bundle", Kind.UNSAFE, False, Action.REPORT),
]


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize(
    ("kind", "garbage", "action"),
    [c[1:] for c in LEFTOVER_CASES],
    ids=[c[0] for c in LEFTOVER_CASES],
)
def test_each_leftover_kind(kind: Kind, garbage: bool, action: Action, mode: Mode) -> None:
    left = Leftover(Item(NS, "x", "/somewhere/x", age_seconds=OLD), kind, "why", garbage)
    (planned,) = plan(Inventory([], [left]), mode=mode, min_age=60)
    assert planned.item is left.item
    assert planned.decision == Decision(kind, action, "why")


# -- --kill-hung ---------------------------------------------------------------------------


def test_kill_hung_kills_only_a_shim_process_found_by_its_own_argv() -> None:
    unresponsive = dict(probe=ProbeResult.UNRESPONSIVE, probe_error="deadline exceeded")
    with_process = bundle("c", live_process=live_shim("c"), shim_pid=4242, **unresponsive)
    without = bundle("d", **unresponsive)

    kept = decide(with_process, without, kill_hung=False)
    assert kind_action(kept["c"]) == kind_action(kept["d"]) == (Kind.HUNG, Action.REPORT)

    killed = decide(with_process, without, kill_hung=True)
    assert kind_action(killed["c"]) == (Kind.HUNG, Action.KILL)
    assert kind_action(killed["d"]) == (Kind.HUNG, Action.REPORT)
    assert killed["d"].notes == ("no shim process of this bundle was found: nothing to kill",)
    # The item apply acts on names the process seen, PID and start time.
    (item,) = [p.item for p in plan(Inventory([with_process], []), mode=Mode.GC, kill_hung=True)]
    assert item.shim == ProcessRef(4242, 1.0) and item.shim_pid == 4242


def test_kill_hung_is_held_by_min_age() -> None:
    young = bundle("c", age=5.0, probe=ProbeResult.UNRESPONSIVE, live_process=live_shim("c"))
    assert kind_action(decide(young, kill_hung=True, min_age=60)["c"]) == (Kind.HUNG, Action.KEEP)


# -- --min-age -------------------------------------------------------------------------------


@pytest.mark.parametrize("age", [0.0, 59.9])
def test_gc_leaves_whatever_is_younger_than_min_age(age: float) -> None:
    d = decide(dead("c", age=age), bundle("l", age=age), mode=Mode.GC, min_age=60)
    for decision in d.values():
        assert decision.action == Action.KEEP
        assert decision.notes[-1] == f"younger than --min-age ({age:.0f}s): left"
    assert {decision.kind for decision in d.values()} == {Kind.DEAD, Kind.LEAKED}


def test_min_age_boundary_and_modes() -> None:
    at = dead("c", age=60.0)
    assert decide(at, mode=Mode.GC, min_age=60)["c"].action == Action.DELETE_DEAD
    young = dead("c", age=1.0)
    # Only gc honours --min-age: load is containerd's own restart rule.
    assert decide(young, mode=Mode.LOAD, min_age=60)["c"].action == Action.DELETE_DEAD
    assert decide(young, mode=Mode.LIST, min_age=60)["c"].action == Action.DELETE_DEAD


def test_min_age_adds_no_note_to_what_is_kept_anyway() -> None:
    d = decide(running("c", age=1.0), mode=Mode.GC, min_age=60)["c"]
    assert (d.action, d.notes) == (Action.KEEP, ())


def test_min_age_applies_to_leftovers() -> None:
    left = Leftover(Item(NS, "w", "/r/w", age_seconds=10.0), Kind.ORPHAN_WORKDIR, "why", True)
    (held,) = plan(Inventory([], [left]), mode=Mode.GC, min_age=60)
    assert held.decision.action == Action.KEEP
    (taken,) = plan(Inventory([], [left]), mode=Mode.GC, min_age=5)
    assert taken.decision.action == Action.REMOVE


# -- stale sockets ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
@pytest.mark.parametrize(
    ("age", "action"),
    [
        (0.0, Action.KEEP),
        (STALE_SOCKET_MIN_AGE - 0.1, Action.KEEP),
        (STALE_SOCKET_MIN_AGE, Action.REMOVE),
    ],
)
def test_a_young_refusing_socket_may_be_a_shim_starting(
    age: float, action: Action, mode: Mode
) -> None:
    item = Item("", "a" * 64, "/run/containerd/s/" + "a" * 64, age_seconds=age, address="unix://x")
    left = Leftover(item, Kind.STALE_SOCKET, "refuses", True)
    (planned,) = plan(Inventory([], [left]), mode=mode, min_age=0)
    assert planned.decision.action == action
    if action == Action.KEEP:
        assert planned.decision.notes == (
            f"younger than {STALE_SOCKET_MIN_AGE:g}s: may be a shim starting",
        )


# -- sandbox groups --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ALL_MODES)
def test_sandbox_named_by_a_member_sandbox_file(mode: Mode) -> None:
    sandbox = bundle("pod")
    member = running("ctr", sandbox_of="pod", boot=Bootstrap(address("pod")))
    d = decide(sandbox, member, mode=mode)
    assert kind_action(d["pod"]) == (Kind.SANDBOX, Action.KEEP)
    assert kind_action(d["ctr"]) == (Kind.RUNNING, Action.KEEP)
    assert d["ctr"].shutdown_shim is False  # a member never shuts its sandbox's shim down


def test_sandbox_file_names_a_sandbox_in_its_own_namespace_only() -> None:
    sandbox = bundle("pod")
    other_ns = running("ctr", namespace="other", sandbox_of="pod")
    assert kind_action(decide(sandbox, other_ns)["pod"]) == LEAK


def test_leaked_member_of_a_live_pod_keeps_the_shared_shim() -> None:
    sandbox = running("pod")
    member = bundle("ctr", sandbox_of="pod", boot=Bootstrap(address("pod")))
    d = decide(sandbox, member)
    assert kind_action(d["ctr"]) == LEAK
    assert d["ctr"].shutdown_shim is False


def test_shared_shim_without_sandbox_files_or_specs() -> None:
    """Two bundles on one socket (a grouped shim): the one with no task is the group's
    sandbox; its shim is not shut down while the other has a task."""
    first = bundle("a", boot=Bootstrap(address("group")))
    second = running("b", boot=Bootstrap(address("group")))
    d = decide(first, second)
    assert kind_action(d["a"]) == (Kind.SANDBOX, Action.KEEP)
    assert d["a"].shutdown_shim is False
    assert kind_action(d["b"]) == (Kind.RUNNING, Action.KEEP)


def test_sockets_are_grouped_by_normalised_path() -> None:
    first = bundle("a", boot=Bootstrap("unix:///run/containerd/s//grp"))
    second = running("b", boot=Bootstrap("unix:///run/containerd/s/grp"))
    assert kind_action(decide(first, second)["a"]) == (Kind.SANDBOX, Action.KEEP)


def test_spec_sandbox_with_a_leaked_member(tmp_path: Path) -> None:
    """CRI pod on one shim, no sandbox files (containerd 1.6/1.7): the spec tells the
    sandbox from the member. The member without a task is a leak; so is the sandbox then,
    cleaned after it in the same run (one gc run reaches the end state); list keeps it."""
    shared = Bootstrap(address("pod"))
    sandbox = cri_sandbox(tmp_path, "pod", boot=shared)
    member = cri_member(tmp_path, "ctr", "pod", boot=shared)
    d = decide(sandbox, member)
    assert kind_action(d["pod"]) == LEAK
    assert d["pod"].after_members and d["pod"].shutdown_shim
    assert not d["ctr"].after_members
    assert kind_action(decide(sandbox, member, mode=Mode.LIST)["pod"]) == (
        Kind.SANDBOX,
        Action.KEEP,
    )
    assert kind_action(d["ctr"]) == LEAK
    assert d["ctr"].shutdown_shim is True  # nobody on that shim has a task


def test_spec_sandbox_with_a_running_member(tmp_path: Path) -> None:
    shared = Bootstrap(address("pod"))
    sandbox = cri_sandbox(tmp_path, "pod", boot=shared)
    member = cri_member(tmp_path, "ctr", "pod", boot=shared, has_task=True, task_pids=[9])
    d = decide(sandbox, member)
    assert kind_action(d["pod"]) == (Kind.SANDBOX, Action.KEEP)
    assert d["pod"].shutdown_shim is False
    assert kind_action(d["ctr"]) == (Kind.RUNNING, Action.KEEP)


@pytest.mark.parametrize("mode", ALL_MODES)
def test_lone_spec_sandbox_is_a_leaked_pod_sandbox(tmp_path: Path, mode: Mode) -> None:
    assert kind_action(decide(cri_sandbox(tmp_path, "pod"), mode=mode)["pod"]) == LEAK


def test_running_sandbox_is_running_not_sandbox() -> None:
    d = decide(running("pod"), bundle("ctr", sandbox_of="pod", has_task=True, task_pids=[3]))
    assert kind_action(d["pod"]) == (Kind.RUNNING, Action.KEEP)


# -- notes, reasons, items -------------------------------------------------------------------


def test_evidence_problems_come_back_as_notes() -> None:
    ev = dead(
        "c",
        runtime=None,
        runtime_error="no shim-binary-path",
        boot=None,
        address_error="address: not a unix socket",
    )
    d = decide(ev)["c"]
    assert d.notes == ("no shim-binary-path", "address: not a unix socket")
    derived = decide(bundle("c", derived_address=True))["c"]
    assert derived.notes == (
        "no address or bootstrap.json: reached at the address its shim derives",
    )


def test_reasons_name_the_evidence() -> None:
    assert decide(running("c"))["c"].reason == "task running with pids [42]"
    assert decide(dead("c", probe_error="no socket"))["c"].reason == (
        "no shim answers and no shim process is alive (no socket)"
    )
    hung = dead("c", live_process=live_shim("c"), shim_pid=4242)
    assert decide(hung)["c"].reason == "shim process 4242 is alive but refuses connections"


def test_item_carries_the_evidence_output_shows() -> None:
    ev = running("c", sandbox_of="pod", age=12.34567)
    (planned,) = plan(Inventory([ev], []), mode=Mode.LIST)
    assert planned.item == Item(
        namespace=NS,
        id="c",
        path=str(STATE / NS / "c"),
        age_seconds=12.346,
        shim_pid=100,
        task_pids=(42,),
        task_status="running",
        runtime=RUNC,
        address=address("c"),
        api_version=2,
        protocol="ttrpc",
        sandbox="pod",
    )


# -- purity ----------------------------------------------------------------------------------


def test_plan_is_a_pure_function_of_the_evidence(tmp_path: Path) -> None:
    shared = Bootstrap(address("pod"))
    bundles = [
        cri_sandbox(tmp_path, "pod", boot=shared),
        cri_member(tmp_path, "ctr", "pod", boot=shared),
        dead("d", age=1.0),
        running("r"),
    ]
    leftovers = [Leftover(Item(NS, "w", "/r/w", age_seconds=OLD), Kind.ORPHAN_WORKDIR, "w", True)]
    inventory = Inventory(bundles, leftovers)
    first = plan(inventory, mode=Mode.GC, min_age=60)
    before = copy.deepcopy(inventory)
    again = plan(inventory, mode=Mode.GC, min_age=60)
    assert first == again
    assert [dataclasses.asdict(b) for b in inventory.bundles] == [
        dataclasses.asdict(b) for b in before.bundles
    ]
    assert all(isinstance(p, Planned) for p in first)
    with pytest.raises(dataclasses.FrozenInstanceError):
        first[0].decision.action = Action.KILL  # type: ignore[misc]
