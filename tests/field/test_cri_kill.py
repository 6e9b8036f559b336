"""containerd killed -9 at the bundle's ``init.pid`` during CRI StartContainer, then gc.

``init.pid`` is written by ``runc create`` inside the shim's Create, which StartContainer
makes before Start (containerd ``pkg/cri/server/container_start.go``, v1.6.20:
``container.NewTask`` then ``task.Start``). The pod's shim is shared: it still serves the
sandbox and a running container. The correct end state: gc hurts nothing live (the sandbox,
the other container), leaves no ``runc init`` of the victim nor its runc state, and once
containerd is back CRI stops and removes every pod, after which nothing is left.

The kill is made exact with :class:`~tests.field.killpoints.RuncHold`: containerd dies
while the shim's Create is in flight after ``runc create`` returned; the shim then has no task
(its Delete answers NotFound) while runc's container is ``created`` with its ``runc init``.
gc takes the bundle for leaked and deletes it: nothing of the victim may outlive it. (When a
SIGKILL at ``init.pid`` loses the race, the Create has answered and the task is ``created``:
gc keeps it and CRI's removal cleans it up; checked by the same assertions.)
"""

from __future__ import annotations

import psutil
import pytest

from tests.field.killpoints import RuncHold, kill_at, parent
from tests.field.shimctl_run import gc, summary
from tests.support import leftovers
from tests.support.cri import NAMESPACE, Cri

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


@pytest.mark.runc_hold
def test_killed_at_init_pid_during_start_container(cri: Cri, runc_hold: RuncHold) -> None:
    pod = cri.run_pod("killed")
    app = cri.run_container(pod, "app")
    live = [cri.container_pid(app)]
    live += [p.pid for p in parent(live[0]).children() if p.pid != live[0]]
    created = {pid: psutil.Process(pid).create_time() for pid in live}
    victim = cri.create_container(pod, "victim")
    runc_hold.arm()
    _, err = kill_at(cri.containerd, runc_hold.held, lambda: cri.start_container(victim))
    runc_hold.release()
    assert err is not None, "StartContainer should fail with containerd gone"
    assert (cri.node.bundle(victim, NAMESPACE) / "init.pid").exists()

    seen = summary(gc(cri.node))
    for pid, when in created.items():
        assert psutil.Process(pid).create_time() == when, f"live pid {pid} hurt: {seen}"

    if not cri.node.bundle(victim, NAMESPACE).exists():
        # gc took the victim for garbage: nothing of it may outlive its bundle.
        cgroup = f"{cri.cgroup_parent}/{victim}"
        left = [leftovers.describe(p) for p in leftovers.cgroup_pids(cgroup)]
        assert not left, f"{left} of {victim[:12]} outlived its bundle: {seen}"
        assert not (cri.runc_root / victim).exists(), f"runc state outlived gc: {seen}"

    cri.containerd.start(timeout=60)
    cri.close()
    cri.wait_ready()
    assert cri.stop_and_remove_all() == [], seen
    assert cri.sandbox_states() == {}, seen
    assert cri.leftovers() == [], seen
