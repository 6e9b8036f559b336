"""containerd killed -9 at runc's ``state.json`` during ``docker run``, then ``shimctl gc``.

The kill is made exact with :class:`~tests.field.killpoints.RuncHold` (Docker's default
runtime is runc behind that wrapper): containerd dies while the shim's Create is in flight
after ``runc create`` wrote ``state.json``; the shim then has no task, runc's container is
``created`` with its ``runc init``. (A bare poll for ``state.json`` wins that race about three
times in four; when it loses, the task is ``created`` and listed as running.)

The correct end state (issue: "no invisible orphans"): after gc no ``runc init`` of the
victim is left, nor its runc state; the bystander container is untouched; once containerd is
back, Docker starts the victim and removes every container without error (the fixture then
finds nothing left: processes, runc state, cgroups, mounts).
"""

from __future__ import annotations

import psutil
import pytest

from tests.field.killpoints import RuncHold, kill_at
from tests.field.shimctl_run import gc, summary
from tests.support import leftovers
from tests.support.docker import Docker, DockerError

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


@pytest.mark.runc_hold
# One generation: the same shimctl path fails alike on 1.7 and 2.1 (checked by hand), and a
# failing run's teardown waits out dockerd's 10 s kill timeout on the orphan.
@pytest.mark.parametrize("docker", ["system"], indirect=True, ids=["1.6"])
def test_killed_at_runc_state_json(docker: Docker, runc_hold: RuncHold) -> None:
    bystander = docker.run("f-bystander")
    by_pid = docker.state("f-bystander")[1]
    by_created = psutil.Process(by_pid).create_time()

    runc_hold.arm()
    _, err = kill_at(docker.containerd, runc_hold.held, lambda: docker.run("f-victim"))
    runc_hold.release()
    states = [p for p in docker.runc_root.glob("*/state.json") if p.parent.name != bystander]
    assert len(states) == 1, states
    state = states[0]
    victim = state.parent.name
    assert isinstance(err, DockerError), f"docker run should fail with containerd gone: {err}"

    result = gc(docker.node)
    seen = summary(result)

    victim_cgroup = f"{docker.cgroup_parent}/{victim}"
    left = [leftovers.describe(p) for p in leftovers.cgroup_pids(victim_cgroup)]
    assert not left, f"{left} of {victim[:12]} outlived gc: {seen}"
    assert not state.exists(), f"runc state of {victim[:12]} outlived gc: {seen}"
    assert psutil.Process(by_pid).create_time() == by_created

    docker.containerd.start()
    started = docker.docker_connected("start", "f-victim")
    assert started.returncode == 0, f"docker start after gc: {started.stderr.strip()}"
    assert docker.state("f-victim")[0] == "running"
    assert docker.state("f-bystander") == ("running", by_pid)
    assert docker.remove_all() == []
    # What is left is checked by the fixture once dockerd has stopped: while it runs, dockerd
    # holds a bind mount of its own data-root (made shared at start-up, unmounted at shutdown:
    # moby daemon/daemon_linux.go, cleanupMounts), which is no container's leftover.
