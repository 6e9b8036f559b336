"""``shimctl gc --kill-hung`` on a pod's shared shim that no longer answers (SIGSTOPped).

The shim serves the sandbox and two containers. Killing it must not leave their processes
running as orphans: afterwards no process is in the pod's cgroups, and CRI stops and removes
the pod, after which nothing is left (runc state, cgroups, mounts).
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from tests.field.killpoints import parent
from tests.field.shimctl_run import gc, summary
from tests.support import leftovers
from tests.support.cri import Cri

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


def test_kill_hung_pod_shim_leaves_no_container_process(cri: Cri) -> None:
    pod = cri.run_pod("hung")
    members = [cri.run_container(pod, name) for name in ("app", "sidecar")]
    shim = parent(cri.container_pid(members[0]))
    shim_started = shim.create_time()
    os.kill(shim.pid, signal.SIGSTOP)
    try:
        # containerd's own timeouts (5 s): a delete verb cut short at 1 s on a busy machine
        # leaves the runc state of the bundle it served.
        seen = summary(gc(cri.node, "--kill-hung"))
    finally:
        # SIGCONT only the shim we stopped, if it is still that process.
        if psutil.pid_exists(shim.pid) and psutil.Process(shim.pid).create_time() == shim_started:
            os.kill(shim.pid, signal.SIGCONT)

    assert not psutil.pid_exists(shim.pid) or shim.status() == psutil.STATUS_ZOMBIE, seen
    left = [leftovers.describe(p) for p in leftovers.cgroup_pids(cri.cgroup_parent)]
    assert not left, f"the pod's processes outlived its shim: {left}; gc: {seen}"
    # CRI learns of the exits from containerd's events, a moment later (as the kubelet does, a
    # pod is removed once CRI has seen its containers exit).
    states = _exited(cri)
    assert set(states.values()) == {"CONTAINER_EXITED"}, (states, seen)
    assert cri.stop_and_remove_all() == [], seen
    assert cri.sandbox_states() == {}, seen
    assert cri.leftovers() == [], seen


def _exited(cri: Cri, deadline: float = 30.0) -> dict[str, str]:
    """The CRI container states, once none is running any more (or at the deadline)."""
    end = time.monotonic() + deadline
    while "CONTAINER_RUNNING" in (states := cri.container_states()).values():
        if time.monotonic() > end:
            break
        time.sleep(0.2)
    return states
