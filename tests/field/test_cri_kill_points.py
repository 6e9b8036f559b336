"""containerd killed -9 during CRI RunPodSandbox and during CreateContainer, then gc.

RunPodSandbox makes the sandbox's container record, then its task: the shim starts and runs
``runc create`` for the pause container (containerd ``pkg/cri/server/sandbox_run.go``,
v1.6.20: ``c.client.NewContainer`` then ``container.NewTask``). containerd dies while that
Create is in flight (held by :class:`~tests.field.killpoints.RuncHold` right after ``runc
create`` returned), so the pod has a record, a shim and a ``runc init``, and CRI never
answered. CreateContainer makes only a container record and CRI's status checkpoint
(``pkg/cri/server/container_create.go``: ``c.client.NewContainer``, then
``containerstore.NewContainer(..., WithStatus(status, containerRootDir))`` writes
``<root>/io.containerd.grpc.v1.cri/containers/<id>/status``): containerd dies at that file,
with no task and no bundle for the container.

Then ``shimctl gc --min-age 0`` runs, with containerd still down (owners from meta.db) or
after containerd started again (owners from its API), and again once containerd runs. After
RunPodSandbox the victim's bundle has a shim with no task (its Create never registered one)
and a ``runc init``: gc must delete it as leaked, unless containerd's restart did (1.7 deletes
such a bundle when it loads its shims; 1.6 and 2.1 keep it), when gc has nothing to do.

The correct end state: no shim, runc state, ``runc init`` or dead-shim bundle of the victim is
left; the victim pod's own sandbox (CreateContainer) and a quiet pod started before are
untouched (their processes alive, same PID and start time); a second gc has nothing to do;
CRI removes the victim container (CreateContainer) and stops and removes every pod, and a pod
of the victim's name runs again (RunPodSandbox).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.field.killpoints import RuncHold, kill_at, parent
from tests.field.shimctl_run import acted, findings, gc, summary
from tests.support import leftovers
from tests.support.cri import NAMESPACE, Cri, stubs

#: CRI's per-container status checkpoint (``status``, through a temp file), written right after
#: the container record; nothing else is written in that dir.
STATUS_GLOB = "io.containerd.grpc.v1.cri/containers/*/*"

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


def _quiet_pod(cri: Cri) -> dict[int, float]:
    """A pod with one running container; its processes (container, pause, shim) by PID ->
    start time."""
    pod = cri.run_pod("quiet")
    app = cri.run_container(pod, "app")
    pid = cri.container_pid(app)
    shim = parent(pid)
    pids = [pid, shim.pid, *(p.pid for p in shim.children() if p.pid != pid)]
    return {p: psutil.Process(p).create_time() for p in pids}


def _untouched(live: dict[int, float], seen: object) -> None:
    for pid, when in live.items():
        assert psutil.pid_exists(pid), f"quiet pid {pid} gone: {seen}"
        proc = psutil.Process(pid)
        assert proc.create_time() == when, f"quiet pid {pid} replaced: {seen}"
        assert proc.status() != psutil.STATUS_ZOMBIE, f"quiet pid {pid} died: {seen}"


def _bundles(cri: Cri) -> set[str]:
    ns = cri.node.task_state / NAMESPACE
    return {p.name for p in ns.iterdir() if not p.name.startswith(".")} if ns.is_dir() else set()


def _shim_of(bundle: Path) -> psutil.Process | None:
    """The shim serving ``bundle``: the parent of its ``init.pid`` (the shim is a subreaper,
    so a ``runc init`` whose ``runc create`` returned is its child), if both are there."""
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        return psutil.Process(int((bundle / "init.pid").read_text())).parent()
    return None


def _holders(hold: RuncHold) -> list[psutil.Process]:
    """The runc wrappers still running (a held ``runc create``)."""
    found: list[psutil.Process] = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(hold.path) in (proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _restart(cri: Cri) -> None:
    cri.containerd.start(timeout=60)
    cri.close()
    cri.wait_ready()


def _no_garbage(cri: Cri, victim: str, shim: tuple[int, float] | None, seen: object) -> None:
    """Nothing of ``victim`` left that nobody tracks: if its bundle is gone, so are its
    shim, its runc state and every process in its cgroup; if it is there, its shim runs."""
    bundle = cri.node.bundle(victim, NAMESPACE)
    alive = shim is not None and _alive(*shim)
    if bundle.exists():
        assert alive, f"bundle {victim[:12]} kept with its shim dead: {seen}"
        return
    assert not alive, f"shim of {victim[:12]} outlived its bundle: {seen}"
    procs = [leftovers.describe(p) for p in leftovers.cgroup_pids(f"{cri.cgroup_parent}/{victim}")]
    assert not procs, f"{procs} of {victim[:12]} outlived its bundle: {seen}"
    assert not (cri.runc_root / victim).exists(), f"runc state of {victim[:12]} left: {seen}"


def _alive(pid: int, when: float) -> bool:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        return proc.create_time() == when and proc.status() != psutil.STATUS_ZOMBIE
    return False


def _second_gc_idle(cri: Cri) -> dict[str, Any]:
    again = gc(cri.node)
    assert acted(again) == [], f"a second gc acted: {summary(again)}"
    return again


def _gc_on_victim(cri: Cri, victim: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """gc once; returns its result and a summary. What gc may do depends on what containerd's
    restart left: 1.7 deletes a bundle whose shim has no task when it loads its shims, 1.6 and
    2.1 keep it. A kept victim bundle must be the one finding gc acted on (leaked, its
    runtime's delete verb run, the bundle deleted); nothing else may be acted on."""
    bundle_kept = cri.node.bundle(victim, NAMESPACE).exists()
    result = gc(cri.node)
    seen = summary(result)
    done = {f["id"]: f for f in acted(result)}
    if not bundle_kept:
        assert done == {}, f"gc acted with the victim already gone: {seen}"
        return result, seen
    assert list(done) == [victim], f"gc should act on the victim {victim[:12]} only: {seen}"
    finding = done[victim]
    got = (finding["kind"], finding["action"], finding["outcome"], finding["owner"])
    assert got == ("leaked", "delete-task", "done", "record-only"), finding
    assert finding["task_pids"] == [], finding
    return result, seen


def _remove_container(cri: Cri, container_id: str) -> None:
    pb, _ = stubs()
    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id), timeout=60)


#: When gc runs: before containerd is started again (an operator cleaning a node whose
#: containerd is down: owners from meta.db) or after (owners from containerd's API).
GC_WHEN = pytest.mark.parametrize("restart_first", [False, True], ids=["down", "restarted"])


@GC_WHEN
@pytest.mark.runc_hold
def test_killed_during_run_pod_sandbox(cri: Cri, runc_hold: RuncHold, restart_first: bool) -> None:
    live = _quiet_pod(cri)
    before = _bundles(cri)
    runc_hold.arm()
    _, err = kill_at(cri.containerd, runc_hold.held, lambda: cri.run_pod("victim"))
    new = _bundles(cri) - before
    assert len(new) == 1, f"one new bundle expected (the victim's sandbox): {new}"
    (victim,) = new
    found = _shim_of(cri.node.bundle(victim, NAMESPACE))
    assert found is not None, f"the victim {victim[:12]} has no live shim"
    shim = (found.pid, found.create_time())
    runc_hold.release()
    # The shim's Create must be over before gc probes it (its wrapper, ended by the shim
    # when containerd's connection dropped, or released here).
    psutil.wait_procs(_holders(runc_hold), timeout=10)
    assert _holders(runc_hold) == [], "the held runc create did not end"
    assert err is not None, "RunPodSandbox should fail with containerd gone"
    assert (cri.runc_root / victim / "state.json").exists(), "runc create did not run"
    held = leftovers.cgroup_pids(f"{cri.cgroup_parent}/{victim}")
    assert held, f"no process in the victim's cgroup: {cri.cgroup_parent}/{victim}"

    if restart_first:
        _restart(cri)
    _, seen = _gc_on_victim(cri, victim)
    _untouched(live, seen)
    _no_garbage(cri, victim, shim, seen)
    assert not cri.node.bundle(victim, NAMESPACE).exists(), f"victim bundle kept: {seen}"
    if not restart_first:
        _restart(cri)
    _second_gc_idle(cri)
    _untouched(live, seen)

    assert cri.stop_and_remove_all() == [], seen
    assert cri.sandbox_states() == {}, seen
    again = cri.run_pod("victim")
    assert cri.sandbox_states() == {again.sandbox_id: "SANDBOX_READY"}, seen
    assert cri.stop_and_remove_all() == [], seen
    assert cri.sandbox_states() == {}, seen
    assert cri.leftovers() == [], seen


@GC_WHEN
def test_killed_during_create_container(cri: Cri, restart_first: bool) -> None:
    live = _quiet_pod(cri)
    pod = cri.run_pod("victim")
    sandbox_shim = _shim_of(cri.node.bundle(pod.sandbox_id, NAMESPACE))
    assert sandbox_shim is not None, "the victim pod has no live shim"
    live |= {p.pid: p.create_time() for p in (sandbox_shim, *sandbox_shim.children())}
    known = set(cri.node.root.glob(STATUS_GLOB))
    assert known, f"no CRI status checkpoint matches {STATUS_GLOB} under {cri.node.root}"

    def status() -> Path | None:
        return next((p for p in cri.node.root.glob(STATUS_GLOB) if p not in known), None)

    # The kill lands at the checkpoint's temp file (continuity's AtomicWriteFile writes and
    # syncs ``.tmp-status*``, then renames it) or, when the poll is late, at ``status`` or
    # after CRI answered: the record exists in every outcome, and no task (CreateContainer
    # makes none).
    found, _ = kill_at(cri.containerd, status, lambda: cri.create_container(pod, "victim"))
    victim = found.parent.name
    assert not cri.node.bundle(victim, NAMESPACE).exists(), "CreateContainer made a bundle"

    if restart_first:
        _restart(cri)
    result, seen = _gc_on_victim(cri, victim)
    assert victim not in findings(result), f"gc saw a container with no bundle: {seen}"
    _untouched(live, seen)
    assert not (cri.runc_root / victim).exists(), f"runc state of {victim[:12]}: {seen}"
    if not restart_first:
        _restart(cri)
    # CRI lists the container again after the restart: it reloads its containers from
    # containerd's records (``pkg/cri/server/restart.go``); with its status checkpoint never
    # renamed into place the state is unknown, else created.
    state = cri.container_states().get(victim)
    assert state in ("CONTAINER_CREATED", "CONTAINER_UNKNOWN"), cri.container_states()
    _second_gc_idle(cri)
    _untouched(live, seen)

    _remove_container(cri, victim)
    assert victim not in cri.container_states(), seen
    assert cri.stop_and_remove_all() == [], seen
    assert cri.sandbox_states() == {}, seen
    assert cri.leftovers() == [], seen
