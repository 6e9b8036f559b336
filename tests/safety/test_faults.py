"""shimctl killed (SIGKILL) at every step of start, delete and gc: the next `gc --min-age 0`
converges: no orphan shim process, no half bundle, no orphan work dir, no stale socket of ours,
and nothing else changed. Steps are injected with SHIMCTL_CRASH_AT (shimctl/faults.py), never
by timing luck."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shimctl import faults
from shimctl.shim.task import TaskClient
from tests.support.helpers import Node, wait_gone
from tests.support.safetykit import (
    REAL_SHIM,
    Fakes,
    backdate,
    clean_exit,
    cli,
    derived_socket,
    findings,
    make_bundle,
    node_processes,
    precious_dir,
    signals_of,
)
from tests.support.tasks import Started, create_task, spec_file, start_shim
from tests.support.tree import snapshot

pytestmark = pytest.mark.real

NS = "default"
KILLED = -signal.SIGKILL


def crash(node: Node, step: str, *args: str) -> None:
    """Run shimctl with SHIMCTL_CRASH_AT=step; it must die by SIGKILL at that step."""
    proc = cli(node, "--timeout", "5", *args, env={faults.ENV: step})
    assert proc.returncode == KILLED, (step, proc.returncode, proc.stdout, proc.stderr)


def lock_is_free(node: Node, settle: float = 2.0) -> bool:
    """flock semantics: a killed holder never keeps the state lock. A child the killed run
    was forking at that instant holds a copy of the (close-on-exec) descriptor until its
    exec, so the lock is given `settle` seconds to come free."""
    path = node.task_state / ".shimctl.node.lock"
    if not path.exists():
        return True
    deadline = time.monotonic() + settle
    while True:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        finally:
            os.close(fd)
        time.sleep(0.02)


def converge(node: Node) -> dict[tuple[str, str], dict[str, object]]:
    """`gc --min-age 0` must succeed; a second run right after finds nothing to do."""
    assert lock_is_free(node)
    first = cli(node, "--timeout", "5", "gc", "--min-age", "0", "--json")
    clean_exit(first, 0)
    again = cli(node, "--timeout", "5", "gc", "--min-age", "0", "--json")
    clean_exit(again, 0)
    mine = {k: f for k, f in findings(again).items() if k[0]}  # sockets of other tests aside
    assert all(f["outcome"] is None for f in mine.values()), mine
    return findings(first)


def assert_gone(node: Node, *ids: str) -> None:
    """No bundle (live or hidden), no work dir, no socket of these ids; no process left."""
    for task_id in ids:
        for top in (node.task_state / NS, node.task_root / NS):
            assert not os.path.lexists(top / task_id), top / task_id
            assert not os.path.lexists(top / f".{task_id}"), top / f".{task_id}"
        assert not os.path.lexists(derived_socket(node, task_id)), task_id


def wait_no_processes(node: Node, keep: frozenset[int] = frozenset()) -> None:
    left = [pid for pid in node_processes(node) if pid not in keep]
    for pid in left:
        assert wait_gone(pid, None, timeout=10), f"process {pid} survived convergence"


# -- start -----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", faults.START_STEPS)
def test_start_killed_at_every_step_converges(
    node: Node, tmp_path: Path, step: str, socket_dir_exclusive: None
) -> None:
    precious = precious_dir(tmp_path)
    before = snapshot(precious)
    crash(node, step, "start", "c1")
    assert lock_is_free(node)
    if step != "start:bundle-created":
        # The shim runs: it must be reachable (not "hung"), so it can be cleaned.
        listed = cli(node, "--timeout", "5", "-n", NS, "list", "--json")
        clean_exit(listed, 0)
        assert findings(listed)[(NS, "c1")]["kind"] == "leaked", findings(listed)
    converge(node)
    assert_gone(node, "c1")
    wait_no_processes(node)
    assert snapshot(precious) == before
    # The id is free again.
    start_shim(node, "c1")
    clean_exit(cli(node, "delete", "c1"), 0)


def test_start_killed_before_the_shim_opened_its_log_is_not_unreachable(
    node: Node, socket_dir_exclusive: None
) -> None:
    """A runc shim blocks opening its log fifo until someone reads it, and answers nothing
    meanwhile. shimctl killed right after the start verb (its fifo reader gone) must not leave
    such a shim unreachable for ever: list and gc hold the fifo while probing."""
    crash(node, "start:bundle-created", "start", "c1")
    bundle = node.bundle("c1")
    os.mkfifo(bundle / "log", 0o700)
    env = {**os.environ, "TTRPC_ADDRESS": node.ttrpc_address}
    verb = subprocess.run(
        [REAL_SHIM, "-namespace", NS, "-address", node.address, "-publish-binary",
         "/usr/bin/containerd", "-id", "c1", "start"],
        cwd=bundle, env=env, capture_output=True, timeout=20, process_group=0, check=True,
    )  # fmt: skip
    address = verb.stdout.decode().strip()
    (bundle / "shim-binary-path").write_text(REAL_SHIM)
    # Nobody reads the log: the shim does not answer.
    with (
        pytest.raises(Exception, match="deadline"),
        TaskClient.connect(address, NS, timeout=1) as client,
    ):
        client.connect_info("c1", timeout=1)
    listed = cli(node, "--timeout", "5", "-n", NS, "list", "--json")
    clean_exit(listed, 0)
    assert findings(listed)[(NS, "c1")]["kind"] == "leaked"
    converge(node)
    assert_gone(node, "c1")
    wait_no_processes(node)


# -- delete ----------------------------------------------------------------------------------


def _stopped_task(node: Node, started: Started, task_id: str) -> int:
    """A shim whose task ran /bin/true and exited (a rootfs mount to clean up); its pid."""
    shim_pid = start_shim(node, task_id, "--spec", str(spec_file(node, ["/bin/true"])))["shim_pid"]
    started.process(shim_pid)
    started.container(task_id)
    create_task(node, task_id)
    address = (node.bundle(task_id) / "address").read_text()
    with TaskClient.connect(address, NS, timeout=10) as client:
        assert client.wait(task_id, timeout=10).exit_status == 0
    return int(shim_pid)


@pytest.mark.parametrize("step", faults.DELETE_STEPS)
def test_delete_killed_at_every_step_converges(
    node: Node, started: Started, tmp_path: Path, step: str, socket_dir_exclusive: None
) -> None:
    precious = precious_dir(tmp_path)
    before = snapshot(precious)
    shim_pid = _stopped_task(node, started, "c1")
    if step == "delete:verb-run":
        # The shim is gone (killed): delete runs the runtime's delete verb instead.
        os.kill(shim_pid, signal.SIGKILL)
        assert wait_gone(shim_pid, None, timeout=10)
    crash(node, step, "delete", "c1")
    assert lock_is_free(node)
    converge(node)
    assert_gone(node, "c1")
    wait_no_processes(node)
    assert not any(p.startswith(str(node.bundle("c1"))) for p in _mounts())
    assert snapshot(precious) == before


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f]


# -- gc --------------------------------------------------------------------------------------


GC_CRASHES = (*faults.GC_STEPS, "bundle:renamed")


@pytest.mark.parametrize("step", GC_CRASHES)
def test_gc_killed_at_every_step_converges_and_changes_nothing_else(
    node: Node, fakes: Fakes, tmp_path: Path, step: str, socket_dir_exclusive: None
) -> None:
    # Garbage of every action kind: a leaked shim (delete-task), a dead one (delete-verb), an
    # empty bundle, an orphan work dir and a stale hidden dir.
    start_shim(node, "leak1")
    dead_pid = start_shim(node, "dead1")["shim_pid"]
    os.kill(dead_pid, signal.SIGKILL)
    assert wait_gone(dead_pid, None, timeout=10)
    (node.task_state / NS / "empty1").mkdir()
    (node.task_root / NS / "orphan1").mkdir()
    (node.task_state / NS / ".hidden1").mkdir()
    # What must stay: a running shim, a hung one, an unsafe bundle leading to precious files.
    make_bundle(node, "running1")
    running = fakes.spawn("running1", task_pid=4242)
    # Hung: its process lives, its socket refuses (no probe timeout to wait for); it logs any
    # signal it gets.
    signals = tmp_path / "signals"
    signals.mkdir()
    make_bundle(node, "hung1")
    hung = fakes.spawn("hung1", sleep=True, marker_dir=signals)
    for task_id in ("running1", "hung1"):
        (node.bundle(task_id) / "address").write_text(f"unix://{derived_socket(node, task_id)}")
    precious = precious_dir(tmp_path)
    make_bundle(node, "unsafe1")
    (node.bundle("unsafe1") / "work").unlink()
    (node.bundle("unsafe1") / "work").symlink_to(precious)
    for task_id in ("running1", "hung1", "unsafe1"):
        backdate(node.bundle(task_id), 600)
    kept = [node.bundle(i) for i in ("running1", "hung1", "unsafe1")]
    kept += [node.workdir(i) for i in ("running1", "hung1")]
    before = snapshot(precious, *kept)

    crash(node, step, "gc", "--min-age", "0")
    found = converge(node)

    assert_gone(node, "leak1", "dead1", "empty1", "orphan1", "hidden1")
    assert not os.path.lexists(node.task_state / NS / ".hidden1")
    wait_no_processes(node, keep=frozenset({running.pid, hung.pid}))
    assert running.alive() and hung.alive() and signals_of(signals, "hung1") == []
    assert snapshot(precious, *kept) == before
    assert found[(NS, "running1")]["kind"] == "running"
    assert found[(NS, "hung1")]["kind"] == "hung"
    assert found[(NS, "unsafe1")]["kind"] == "unsafe"


def test_gc_cleans_a_leaked_shim_that_died_between_plan_and_action(
    node: Node, started: Started
) -> None:
    """gc plans a delete-task for a live leaked shim; before the action runs, the shim dies
    (a gc killed mid-action had already shut it down). Under the lock the action finds the
    socket refusing and cleans the bundle as a dead shim's instead of failing."""
    from shimctl.models.findings import Action, Kind, Mode
    from shimctl.reconcile import apply, collect, plan, run
    from shimctl.settings import Settings

    pid = started.process(start_shim(node, "lk")["shim_pid"])
    settings = Settings(
        root=node.root, state=node.state, address=node.address, namespace_given=True
    )
    planned = plan.plan(collect.collect(settings), mode=Mode.GC, min_age=0)
    (lk,) = [p for p in planned if p.item.id == "lk"]
    decision = lk.decision
    assert (decision.kind, decision.action) == (Kind.LEAKED, Action.DELETE_TASK)

    os.kill(pid, signal.SIGKILL)  # our own shim, started above: its socket stays, refusing
    assert wait_gone(pid, None)
    assert derived_socket(node, "lk").is_socket()
    results = apply.apply(settings, planned, dry_run=False)
    f = run.finding(lk, results[planned.index(lk)])

    assert f.outcome == "done", (f.outcome, f.error)
    assert any("cleaned as dead" in note for note in f.notes), f.notes
    assert not os.path.lexists(node.bundle("lk"))
    assert not os.path.lexists(node.workdir("lk"))
    assert not os.path.lexists(derived_socket(node, "lk"))
