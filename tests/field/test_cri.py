"""shimctl beside containerd's CRI plugin, driven through the CRI v1 API (as the kubelet does),
on containerd 1.6, 1.7 and 2.1.

A quiet node — one pod (host network) with two containers, all on the pod's one shared shim —
is live: ``list`` shows each container's pod and runtime, ``shimctl gc --min-age 0`` must
leave every process and bundle alone, a second gc must find nothing to do, and CRI must stop
and remove every pod afterwards (the fixture checks that, and that nothing is left:
processes, runc state, cgroups, mounts).
"""

from __future__ import annotations

import psutil
import pytest

from tests.field.shimctl_run import acted, findings, gc, listing
from tests.support.cri import NAMESPACE, Cri

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


def test_quiet_pod_is_left_alone(cri: Cri) -> None:
    pod = cri.run_pod("quiet")
    members = [cri.run_container(pod, name) for name in ("app", "sidecar")]
    node = cri.node
    bundles = [node.bundle(i, NAMESPACE) for i in (pod.sandbox_id, *members)]
    pids = {cid: cri.container_pid(cid) for cid in members}
    idents = {cid: psutil.Process(pid).create_time() for cid, pid in pids.items()}

    listed = listing(node)
    assert {pod.sandbox_id, *members} <= set(listed), sorted(listed)
    # Pod membership on every generation: 2.x writes a `sandbox` file, 1.6/1.7 only the CRI
    # annotations; 2.x writes no shim-binary-path into a member: its runtime is the pod's.
    runtime = listed[pod.sandbox_id]["runtime"]
    assert runtime and runtime.endswith("/containerd-shim-runc-v2"), listed[pod.sandbox_id]
    assert listed[pod.sandbox_id]["sandbox"] is None
    for cid in members:
        assert (listed[cid]["sandbox"], listed[cid]["runtime"]) == (pod.sandbox_id, runtime)

    first = gc(node)
    assert not acted(first), acted(first)
    found = findings(first)
    for cid in (pod.sandbox_id, *members):
        assert found[cid]["action"] == "keep", found[cid]
    assert all(b.is_dir() for b in bundles), bundles
    for cid, pid in pids.items():
        assert psutil.Process(pid).create_time() == idents[cid]
    assert set(cri.container_states().values()) == {"CONTAINER_RUNNING"}
    assert cri.sandbox_states() == {pod.sandbox_id: "SANDBOX_READY"}

    second = gc(node)
    assert not acted(second), acted(second)
