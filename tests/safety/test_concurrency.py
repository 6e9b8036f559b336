"""Concurrent runs over one state dir: N `shimctl gc` loops (some killed at a checkpoint) beside
start/delete loops, for a bounded time. No traceback, no double delete reported as a failure,
every started shim either listed or cleanly deleted, and the state lock never held by a dead
process (flock semantics)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shimctl import faults
from shimctl.errors import ExitCode
from tests.support.helpers import Node, pid_alive, wait_gone
from tests.support.safetykit import clean_exit, cli, derived_socket, node_processes

pytestmark = pytest.mark.real

NS = "default"
DURATION = 12.0  # seconds of concurrent load
GC_LOOPS = 3
START_DELETE_LOOPS = 2


@dataclass
class Log:
    runs: list[tuple[str, tuple[str, ...], subprocess.CompletedProcess[str]]] = field(
        default_factory=list
    )
    started: dict[str, int] = field(default_factory=dict)  # id -> shim pid
    lock_problems: list[str] = field(default_factory=list)
    lock = threading.Lock()

    def add(self, who: str, args: tuple[str, ...], proc: subprocess.CompletedProcess[str]) -> None:
        with self.lock:
            self.runs.append((who, args, proc))


def lock_holders(path: Path) -> list[int]:
    """PIDs holding a flock on `path`, from /proc/locks."""
    try:
        ino = os.stat(path).st_ino
    except FileNotFoundError:
        return []
    holders = []
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if "->" in parts:  # a waiter, not a holder
                continue
            if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].split(":")[-1] == str(ino):
                holders.append(int(parts[4]))
    return holders


def gc_loop(node: Node, log: Log, stop: float, index: int) -> None:
    n = 0
    while time.monotonic() < stop:
        n += 1
        env = {}
        if index == 0 and n % 3 == 0:
            # Killed mid-run now and then: the others must never wait on its lock.
            env[faults.ENV] = ("gc:planned", "gc:action-done", "bundle:renamed")[(n // 3 - 1) % 3]
        args = ("--timeout", "3", "gc", "--min-age", "0", "--json")
        log.add(f"gc{index}:{env.get(faults.ENV, '')}", args, cli(node, *args, env=env))


def start_delete_loop(node: Node, log: Log, stop: float, index: int) -> None:
    n = 0
    while time.monotonic() < stop:
        n += 1
        task_id = f"w{index}-{n}"
        args = ("start", task_id, "--json")
        proc = cli(node, *args)
        log.add("start", args, proc)
        if proc.returncode == 0:
            with log.lock:
                log.started[task_id] = json.loads(proc.stdout)["result"]["shim_pid"]
        if n % 4 != 0:  # leave some for gc (or the final check) to find
            args = ("delete", task_id, "--json")
            log.add("delete", args, cli(node, *args))


def watch_lock(node: Node, log: Log, stop: float) -> None:
    path = node.task_state / ".shimctl.node.lock"
    while time.monotonic() < stop:
        for pid in lock_holders(path):
            # A killed multi-threaded process shows as a zombie while its other threads still
            # hold its files for a moment: dead and still holding it after a settle is a leak.
            if not pid_alive(pid) and _still_holds(path, pid, settle=1.0):
                log.lock_problems.append(f"lock held by dead process {pid}")
        time.sleep(0.05)


def _still_holds(path: Path, pid: int, *, settle: float) -> bool:
    end = time.monotonic() + settle
    while pid in lock_holders(path):
        if time.monotonic() >= end:
            return True
        time.sleep(0.05)
    return False


def test_concurrent_gc_start_and_delete(node: Node, socket_dir_exclusive: None) -> None:
    log = Log()
    stop = time.monotonic() + DURATION
    threads = [threading.Thread(target=gc_loop, args=(node, log, stop, i)) for i in range(GC_LOOPS)]
    threads += [
        threading.Thread(target=start_delete_loop, args=(node, log, stop, i))
        for i in range(START_DELETE_LOOPS)
    ]
    threads.append(threading.Thread(target=watch_lock, args=(node, log, stop)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DURATION + 120)
    assert not any(t.is_alive() for t in threads)

    crashed = 0
    for who, args, proc in log.runs:
        out = f"{who} {args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr + proc.stdout, out
        if who.startswith("gc") and who.split(":", 1)[1]:
            assert proc.returncode in (0, -9), out  # 0: the checkpoint was not reached
            crashed += proc.returncode == -9
        elif who.startswith("gc"):
            clean_exit(proc, 0)  # never 11 (a failed action) nor 7 (a lock wait)
            for f in json.loads(proc.stdout)["result"]["findings"]:
                assert f["outcome"] != "failed", (f, out)
        elif who == "start":
            clean_exit(proc, 0)
        else:
            clean_exit(proc, 0, ExitCode.NOT_FOUND)  # gc had already cleaned the leaked shim
    assert crashed, "no gc run was killed: the crash injection did not happen"
    assert len(log.started) >= 4, log.started
    assert log.lock_problems == []
    assert lock_holders(node.task_state / ".shimctl.node.lock") == []

    # Every started shim is either listed (bundle and process alive) or cleanly deleted.
    listed = cli(node, "-n", NS, "--timeout", "3", "list", "--json")
    clean_exit(listed, 0)
    present = {f["id"]: f for f in json.loads(listed.stdout)["result"]["findings"]}
    for task_id, pid in log.started.items():
        if task_id in present and present[task_id]["kind"] == "orphan-workdir":
            # A gc killed at `bundle:renamed` (after Delete and Shutdown): the bundle is `.<id>`
            # now, its work dir is left and its shim is gone; the last gc below removes both.
            assert present.get(f".{task_id}", {}).get("kind") == "stale-hidden", present
            assert wait_gone(pid, None, timeout=10), task_id
        elif task_id in present and present[task_id]["kind"] == "dead":
            # A gc killed after its Shutdown and before the bundle delete: the shim is gone,
            # its bundle stays as a dead one; the last gc below removes it.
            assert wait_gone(pid, None, timeout=10), task_id
        elif task_id in present:
            assert present[task_id]["kind"] == "leaked", present[task_id]
            assert pid_alive(pid), task_id
        else:
            assert wait_gone(pid, None, timeout=10), task_id
            assert not os.path.lexists(node.bundle(task_id)), task_id
            assert not os.path.lexists(node.workdir(task_id)), task_id
            assert not os.path.lexists(derived_socket(node, task_id)), task_id
    named = {i.removeprefix(".") for i in present}
    assert named <= set(log.started), named - set(log.started)

    # And one more gc cleans up the rest.
    clean_exit(cli(node, "--timeout", "3", "gc", "--min-age", "0"), 0)
    for pid in node_processes(node):
        assert wait_gone(pid, None, timeout=10), pid
    assert sorted(os.listdir(node.task_state / NS)) == []
    assert sorted(os.listdir(node.task_root / NS)) == []
