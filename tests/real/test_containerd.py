"""shimctl against a real, private containerd 1.6 (issue 4): it cleans what containerd leaks,
containerd adopts what it writes, and it is safe next to a busy containerd.

Each test starts its own containerd (tests/support/containerd.py) over the test's node: own
config.toml,
root, state, gRPC and ttrpc addresses. Containers are run with ``ctr run --rootfs`` on a
busybox tree; their ids carry a hash of the test's tmp dir (runc's state dir is shared).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shimctl.errors import ExitCode
from tests.support import findings
from tests.support.containerd import Containerd, running_containerd, tool_env
from tests.support.helpers import (
    DEFAULT_RUNC_ROOT,
    Node,
    find_address_processes,
    pid_alive,
    run_cli,
    shim_socket_path,
    wait_gone,
)
from tests.support.tasks import create_task, spec_file, start_shim, stop_task

pytestmark = pytest.mark.real

SHIM_PATH = "/usr/bin/containerd-shim-runc-v2"


@pytest.fixture
def containerd(node: Node) -> Iterator[Containerd]:
    with running_containerd(node) as cd:
        yield cd


def _doc(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def _findings(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return findings.by_id(proc)


def _shimctl(node: Node, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """shimctl with the node's root/state/address flags and ``--json``."""
    return run_cli(node, "--json", *args, timeout=timeout)


def _shims_of(node: Node, task_id: str) -> list[int]:
    """Live shim processes (any verb) of this containerd address for ``task_id``."""
    return [
        rec.pid
        for rec in find_address_processes(node.address)
        if "-id" in rec.argv and rec.argv[rec.argv.index("-id") + 1] == task_id
    ]


def _blocked(cd: Containerd, task_id: str) -> bool:
    """Does containerd refuse a new task for ``task_id`` because it holds one already?"""
    res = cd.ctr("task", "start", "-d", "--null-io", task_id, check=False)
    return res.returncode != 0 and "already exists" in res.stderr


# ---------------------------------------------------------------------------------------------
# 1. containerd wrote it, shimctl handles it: the #6860 leak that 1.6.20 keeps for ever


def test_gc_cleans_the_leak_1_6_keeps(containerd: Containerd, socket_dir_exclusive: None) -> None:
    cd, node = containerd, containerd.node
    run_id, leak_id, exited_id = cd.ids("run", "leak", "exited")
    task_pid = cd.run_container(run_id)
    run_shim = cd.shim_pid(run_id)
    cd.ctr(
        "run", "-d", "--null-io", "--rootfs", str(cd.rootfs), exited_id, "/bin/sh", "-c", "exit 3"
    )
    cd.wait_task(exited_id, "STOPPED")

    listed = _shimctl(node, "list")
    assert listed.returncode == 0, listed.stderr
    found = _findings(listed)[run_id]
    assert found["kind"] == "running", found
    assert found["task_pids"] == [task_pid] and found["task_status"] == "running"
    assert found["shim_pid"] == run_shim
    assert found["runtime"] == SHIM_PATH
    assert found["address"] == f"unix://{shim_socket_path(node.address, 'default', run_id)}"
    # shimctl will not delete a running task of containerd's.
    refused = run_cli(node, "delete", run_id)
    assert refused.returncode == ExitCode.FAILED_PRECONDITION, refused.stdout + refused.stderr
    assert cd.tasks()[run_id] == (task_pid, "RUNNING")

    # containerd #6860: containerd dies after the shim started, before it created the task.
    leak_shim = cd.crash_during_create(leak_id)
    bundle = node.bundle(leak_id)
    assert sorted(os.listdir(bundle)) == ["address", "config.json", "log", "rootfs", "work"]
    cd.start()

    # containerd 1.6.20 adopts the leak and keeps it, restart after restart.
    for restart in range(2):
        if restart:
            cd.restart()
        assert pid_alive(leak_shim), f"restart {restart}: the leaked shim is gone"
        assert bundle.is_dir() and node.workdir(leak_id).is_dir()
        assert str(bundle / "log") in cd.open_files(), "containerd did not load the bundle"
        assert leak_id not in cd.tasks(), "the leak is invisible to `ctr task ls`"
        assert _blocked(cd, leak_id), "the leaked shim blocks its id"
    assert "cleaning leaked shim" not in cd.log_text()
    assert cd.tasks()[run_id] == (task_pid, "RUNNING")
    # An exit this containerd saw (the first one exited before its restarts: containerd
    # 1.7's restart rule would delete that one).
    seen_id = cd.ids("seen")[0]
    cd.ctr("run", "-d", "--null-io", "--rootfs", str(cd.rootfs), seen_id, "/bin/sh", "-c", "exit 3")
    cd.wait_task(seen_id, "STOPPED")

    proc = _shimctl(node, "gc", "--min-age", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found_gc = _findings(proc)
    assert found_gc[leak_id]["kind"] == "leaked", found_gc[leak_id]
    assert found_gc[leak_id]["outcome"] == "done", found_gc[leak_id]
    assert found_gc[run_id]["kind"] == "running" and found_gc[run_id]["action"] == "keep"
    assert found_gc[run_id]["outcome"] is None
    assert found_gc[seen_id]["kind"] == "stopped" and found_gc[seen_id]["outcome"] is None
    assert found_gc[seen_id]["owner"] == "tracked"
    # Exited before containerd's start: deleted through containerd's API, its exit reported.
    exited = found_gc[exited_id]
    assert (exited["kind"], exited["action"], exited["outcome"]) == (
        "leaked",
        "delete-via-containerd",
        "done",
    ), exited
    assert exited["exit_status"] == 3
    assert exited_id not in cd.tasks()

    assert wait_gone(leak_shim, None, timeout=10)
    assert not bundle.exists() and not node.workdir(leak_id).exists()
    assert not os.path.lexists(shim_socket_path(node.address, "default", leak_id))
    # The running container is untouched.
    assert pid_alive(task_pid) and pid_alive(run_shim)
    assert node.bundle(run_id).is_dir() and node.workdir(run_id).is_dir()
    assert cd.tasks()[run_id] == (task_pid, "RUNNING")
    # containerd noticed the shim go, is healthy, and the id is free again.
    cd.wait_log(rf'msg="shim disconnected" id={leak_id}\b')
    cd.ctr("version")
    deadline = time.monotonic() + 10
    while True:  # containerd drops the task after its own cleanup attempt
        res = cd.ctr("task", "start", "-d", "--null-io", leak_id, check=False)
        if res.returncode == 0 or "already exists" not in res.stderr:
            break
        assert time.monotonic() < deadline, "containerd still holds the leaked task"
        time.sleep(0.05)
    assert res.returncode == 0, res.stderr
    assert cd.wait_task(leak_id, "RUNNING") > 0
    # The exited task kept its exit status for its owner.
    removed = cd.ctr("task", "rm", seen_id)
    assert "exit code 3" in removed.stderr, removed.stderr


# ---------------------------------------------------------------------------------------------
# 2. shimctl wrote it, containerd adopts it


def test_containerd_adopts_shimctl_bundles(containerd: Containerd) -> None:
    cd, node = containerd, containerd.node
    adopt_id, gone_id = cd.ids("adopt", "gone")
    started = start_shim(node, adopt_id, "--spec", str(spec_file(node)))
    shim_pid = started["shim_pid"]
    task_pid = create_task(node, adopt_id)
    start_shim(node, gone_id)
    deleted = run_cli(node, "delete", gone_id)
    assert deleted.returncode == 0, deleted.stderr
    bundle = node.bundle(adopt_id)
    files = sorted(os.listdir(bundle))

    cd.restart()
    # 1.6.20 loads the bundle: it holds the shim's log fifo and lists the task shimctl created.
    assert str(bundle / "log") in cd.open_files()
    assert cd.tasks()[adopt_id] == (task_pid, "RUNNING")
    assert pid_alive(shim_pid) and pid_alive(task_pid)
    assert sorted(os.listdir(bundle)) == files
    assert (bundle / "shim-binary-path").read_text() == SHIM_PATH
    assert node.workdir(adopt_id).is_dir(), "containerd swept the work dir of a loaded shim"
    # The deleted one is not resurrected.
    assert not node.bundle(gone_id).exists() and not node.workdir(gone_id).exists()
    assert gone_id not in cd.tasks() and not _shims_of(node, gone_id)

    # shimctl still handles it while containerd holds it; containerd lets go.
    assert stop_task(node, adopt_id) == 137
    deleted = run_cli(node, "delete", adopt_id)
    assert deleted.returncode == 0, deleted.stderr
    assert wait_gone(shim_pid, None, timeout=10)
    cd.wait_log(rf'msg="shim disconnected" id={adopt_id}\b')
    assert adopt_id not in cd.tasks()
    cd.restart()
    assert not bundle.exists() and not node.workdir(adopt_id).exists()
    assert adopt_id not in cd.tasks() and not _shims_of(node, adopt_id)
    assert str(bundle / "log") not in cd.open_files()


# ---------------------------------------------------------------------------------------------
# 3. Dead shims


def test_gc_cleans_dead_shims(containerd: Containerd, socket_dir_exclusive: None) -> None:
    cd, node = containerd, containerd.node
    keep_id, dead_id, never_id = cd.ids("keep", "dead", "never")
    keep_pid = cd.run_container(keep_id)
    dead_pid = cd.run_container(dead_id)
    never_shim = cd.crash_during_create(never_id)  # a shim whose task was never created
    cd.start()

    # A dead shim whose task was never created: 1.6.20 keeps its bundle for ever (its
    # `delete` verb fails without the `runtime` file) and sweeps its work dir.
    os.kill(never_shim, signal.SIGKILL)
    assert wait_gone(never_shim, None, timeout=10)
    cd.wait_log(rf'msg="shim disconnected" id={never_id}\b')
    cd.restart()
    cd.wait_log(rf"failed to clean up after shim disconnected.*id={never_id}\b")
    never_bundle = node.bundle(never_id)
    assert never_bundle.is_dir(), "containerd 1.6.20 removed the dead never-created bundle"
    assert (never_bundle / "work").is_symlink() and not (never_bundle / "work").exists()

    # A dead shim of a running container, killed while containerd is down: its container
    # process outlives it.
    cd.stop()
    dead_shim = cd.shim_pid(dead_id)
    os.kill(dead_shim, signal.SIGKILL)
    assert wait_gone(dead_shim, None, timeout=10)
    assert pid_alive(dead_pid)

    proc = _shimctl(node, "gc", "--min-age", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = _findings(proc)
    # No shim-binary-path for the never-created one: containerd died before writing it. Its
    # runtime is in containerd's metadata, which shimctl reads (containerd is stopped), as
    # containerd's manager does at restart: a dead shim with a known runtime.
    assert found[dead_id]["kind"] == "dead", found[dead_id]
    assert found[never_id]["kind"] == "dead", found[never_id]
    # (its record names the test's crash runtime, resolved as containerd resolves it)
    assert str(found[never_id]["runtime"]).endswith("/containerd-shim-crash-v2"), found[never_id]
    assert found[never_id]["owner"] == "record-only"
    for gone in (dead_id, never_id):
        assert found[gone]["action"] == "delete-dead" and found[gone]["outcome"] == "done"
        assert not node.bundle(gone).exists() and not node.workdir(gone).exists()
        assert not os.path.lexists(shim_socket_path(node.address, "default", gone)), gone
    # The runtime's delete verb ran: runc delete --force killed the container process.
    assert any("delete verb: exit status 137" in n for n in found[dead_id]["notes"]), found
    assert wait_gone(dead_pid, None, timeout=10)
    assert not os.path.exists(os.path.join(DEFAULT_RUNC_ROOT, "default", dead_id))
    assert found[keep_id]["kind"] == "running" and found[keep_id]["outcome"] is None

    cd.start()
    assert cd.tasks() == {keep_id: (keep_pid, "RUNNING")}
    assert never_id not in cd.log_text(current=True), "containerd still retries the bundle"
    cd.ctr("version")
    # The records are containerd's own: it runs a new task for the dead container.
    assert sorted(cd.containers()) == sorted([keep_id, dead_id, never_id])
    cd.ctr("task", "start", "-d", "--null-io", dead_id)
    assert cd.wait_task(dead_id, "RUNNING") > 0


# ---------------------------------------------------------------------------------------------
# 4. gc next to a busy containerd


CHURN = 30


def test_gc_beside_busy_containerd(containerd: Containerd, socket_dir_exclusive: None) -> None:
    cd, node = containerd, containerd.node
    keep_id, old_id = cd.ids("keep", "old")
    keep_pid = cd.run_container(keep_id)
    keep_shim = cd.shim_pid(keep_id)
    # One real garbage item past the default --min-age (5 min): a #6860 leak, aged by hand.
    old_shim = cd.crash_during_create(old_id)
    cd.start()
    past = time.time() - 600
    for path in (node.bundle(old_id) / "address", node.bundle(old_id)):
        os.utime(path, (past, past), follow_symlinks=False)
    churn_ids = cd.ids(*(f"churn{i}" for i in range(CHURN)))

    runs: list[subprocess.CompletedProcess[str]] = []
    stop = threading.Event()

    def gc_loop() -> None:
        while not stop.is_set():
            runs.append(_shimctl(node, "gc"))  # the default --min-age
            stop.wait(0.1)

    loop = threading.Thread(target=gc_loop, daemon=True)
    loop.start()
    failed: list[str] = []
    try:
        for i, churn_id in enumerate(churn_ids):
            # Every third container lives a little, so gc also meets running ones.
            argv = ["/bin/sleep", "0.2"] if i % 3 == 0 else ["/bin/true"]
            res = cd.ctr(
                "run", "--rm", "--null-io", "--rootfs", str(cd.rootfs), churn_id, *argv, check=False
            )
            if res.returncode != 0:
                failed.append(f"{churn_id}: {res.returncode} {res.stderr.strip()}")
    finally:
        stop.set()
        loop.join(timeout=60)
    assert not loop.is_alive()
    assert not failed, failed
    assert len(runs) >= 5, f"gc ran only {len(runs)} times"

    seen: set[str] = set()
    acted: list[dict[str, Any]] = []
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        for f in _doc(run)["result"]["findings"]:
            if f["namespace"] != "default":
                continue
            seen.add(f["id"])
            if f["outcome"] is not None:
                acted.append(f)
    assert seen & set(churn_ids), "gc never met a container in flight"
    # gc acted once, on the old leak only, while containerd was busy.
    assert [(f["id"], f["kind"], f["outcome"]) for f in acted] == [(old_id, "leaked", "done")]
    assert wait_gone(old_shim, None, timeout=10)
    assert not node.bundle(old_id).exists()

    assert cd.tasks() == {keep_id: (keep_pid, "RUNNING")}
    assert pid_alive(keep_shim) and pid_alive(keep_pid)
    assert sorted(cd.containers()) == sorted([keep_id, old_id])  # the records are containerd's
    assert sorted(os.listdir(node.task_state / "default")) == [keep_id]
    assert sorted(os.listdir(node.task_root / "default")) == [keep_id]


# ---------------------------------------------------------------------------------------------
# 5. containerd's config.toml is all shimctl needs


def _shimctl_with_config(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = tool_env()
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "shimctl", "--config", str(config), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_config_toml_is_enough(containerd: Containerd) -> None:
    cd, node = containerd, containerd.node
    run_id, cfg_id = cd.ids("run", "cfg")
    task_pid = cd.run_container(run_id)

    listed = _shimctl_with_config(cd.config_path, "--json", "list")
    assert listed.returncode == 0, listed.stderr
    found = _findings(listed)[run_id]
    assert found["kind"] == "running" and found["task_pids"] == [task_pid]
    assert found["path"] == str(node.bundle(run_id))

    # The gRPC address: `load` sees containerd answer there and refuses.
    refused = _shimctl_with_config(cd.config_path, "load")
    assert refused.returncode == ExitCode.FAILED_PRECONDITION, refused.stdout + refused.stderr
    assert node.address in refused.stderr

    # Both addresses reach the shims shimctl starts.
    started = _shimctl_with_config(cd.config_path, "--json", "start", cfg_id)
    assert started.returncode == 0, started.stderr
    shim_pid = _doc(started)["result"]["shim_pid"]
    assert _shims_of(node, cfg_id) == [shim_pid]
    environ = Path(f"/proc/{shim_pid}/environ").read_bytes().split(b"\0")
    assert f"TTRPC_ADDRESS={node.ttrpc_address}".encode() in environ
    assert node.bundle(cfg_id).is_dir()
    deleted = _shimctl_with_config(cd.config_path, "delete", cfg_id)
    assert deleted.returncode == 0, deleted.stderr
    assert wait_gone(shim_pid, None, timeout=10)
    assert cd.tasks() == {run_id: (task_pid, "RUNNING")}


# ---------------------------------------------------------------------------------------------
# 6. CRI-style pods: the runc shim groups containers by the sandbox-id annotation

SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
CONTAINER_TYPE = "io.kubernetes.cri.container-type"


def _pod_args(pod_id: str, kind: str) -> list[str]:
    return ["--annotation", f"{SANDBOX_ID}={pod_id}", "--annotation", f"{CONTAINER_TYPE}={kind}"]


def test_gc_cleans_a_leak_in_a_pod_shim(containerd: Containerd, socket_dir_exclusive: None) -> None:
    cd, node = containerd, containerd.node
    pod_id, app_id, leak_id = cd.ids("pod", "app", "leak")
    pod_pid = cd.run_container(pod_id, run_args=_pod_args(pod_id, "sandbox"))
    app_pid = cd.run_container(app_id, run_args=_pod_args(pod_id, "container"))
    shim = cd.shim_pid(pod_id)
    # #6860 for a pod member: its bundle points to the pod's shim, which has no task for it.
    assert cd.crash_during_create(leak_id, run_args=_pod_args(pod_id, "container")) == shim
    address = (node.bundle(pod_id) / "address").read_text()
    assert (node.bundle(leak_id) / "address").read_text() == address
    cd.start()
    assert _blocked(cd, leak_id)

    proc = _shimctl(node, "gc", "--min-age", "0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = _findings(proc)
    assert found[leak_id]["kind"] == "leaked" and found[leak_id]["outcome"] == "done"
    assert "shared shim: not shut down" in found[leak_id]["notes"], found[leak_id]
    for keep in (pod_id, app_id):
        assert found[keep]["kind"] == "running" and found[keep]["outcome"] is None, found[keep]
    assert not node.bundle(leak_id).exists() and not node.workdir(leak_id).exists()
    # The pod's shim and both of its containers are untouched.
    assert pid_alive(shim)
    assert cd.tasks() == {pod_id: (pod_pid, "RUNNING"), app_id: (app_pid, "RUNNING")}
    # containerd 1.6.20 keeps its connection for the leaked id (the shim lives on), so the id
    # stays taken in its memory until it restarts; then it is free.
    assert _blocked(cd, leak_id)
    cd.restart()
    cd.ctr("task", "start", "-d", "--null-io", leak_id)
    assert cd.wait_task(leak_id, "RUNNING") > 0
    assert cd.served_by(leak_id) == shim


def test_gc_cleans_a_leaked_pod_sandbox(containerd: Containerd, socket_dir_exclusive: None) -> None:
    cd, node = containerd, containerd.node
    (pod_id,) = cd.ids("pod")
    # #6860 for a pod: containerd dies while the pause container's shim starts.
    shim = cd.crash_during_create(pod_id, run_args=_pod_args(pod_id, "sandbox"))
    cd.start()
    assert _blocked(cd, pod_id)

    # A CRI sandbox spec alone does not make a sandbox worth keeping: no task, no member.
    try:
        proc = _shimctl(node, "gc", "--min-age", "0")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        found = _findings(proc)[pod_id]
        assert (found["kind"], found["outcome"]) == ("leaked", "done"), found
        assert wait_gone(shim, None, timeout=10)
        assert not node.bundle(pod_id).exists() and not node.workdir(pod_id).exists()
    finally:
        if node.bundle(pod_id).exists():  # the leak gc kept: Delete RPC, Shutdown, bundle
            run_cli(node, "delete", pod_id)
    cd.wait_log(rf'msg="shim disconnected" id={pod_id}\b')
    cd.ctr("version")
