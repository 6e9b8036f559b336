"""gc --kill-hung on a pod's hung shim: the sandbox's kill is not held back by its members,
which hang with it (they have no shim of their own to kill; the kill runs their verbs)."""

from __future__ import annotations

from pathlib import Path

from shimctl.models.findings import Action, Kind, Mode, ProbeResult
from shimctl.node.processes import ProcessRef, ShimProcess
from shimctl.reconcile.evidence import BundleEvidence, Inventory
from shimctl.reconcile.plan import Policy, plan_with
from shimctl.shim.bootstrap import Bootstrap

NS = "k8s.io"
STATE = Path("/nonexistent/state/io.containerd.runtime.v2.task")
POD_SOCKET = "unix:///run/containerd/s/" + "a" * 64


def hung(id: str, **kw: object) -> BundleEvidence:
    ev = BundleEvidence(
        NS,
        id,
        STATE / NS / id,
        3600.0,
        entries=["bootstrap.json", "config.json"],
        boot=Bootstrap(POD_SOCKET),
        runtime="/usr/bin/containerd-shim-runc-v2",
        probe=ProbeResult.UNRESPONSIVE,
        probe_error="deadline exceeded",
    )
    for key, value in kw.items():
        setattr(ev, key, value)
    return ev


def test_kill_hung_kills_a_pods_hung_shim_whatever_its_members() -> None:
    shim = ShimProcess(ProcessRef(4242, 1.0), NS, "sb1", "/run/c.sock", str(STATE / NS / "sb1"), ())
    bundles = [
        hung("sb1", live_process=shim, shim_pid=4242),
        hung("c1", sandbox_of="sb1"),
        hung("c2", sandbox_of="sb1"),
    ]
    inventory = Inventory(bundles, [])

    asked = {p.item.id: p.decision for p in plan_with(inventory, Mode.GC, Policy(kill_hung=True))}
    default = {p.item.id: p.decision for p in plan_with(inventory, Mode.GC, Policy())}

    assert (asked["sb1"].kind, asked["sb1"].action) == (Kind.HUNG, Action.KILL)
    assert asked["c1"].action == asked["c2"].action == Action.REPORT
    assert default["sb1"].action == Action.REPORT
