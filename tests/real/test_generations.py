"""shimctl against every containerd generation, each with its own runc shim and runc (issue 5):
1.6 (the machine's packages), 1.7 and 2.1 (Debian trixie's and sid's, unpacked by
scripts/fetch-containerd.sh). The versions are in the test ids and in each test's
``containerd`` property (junit XML).

1. containerd wrote it, shimctl handles it: a running container, a #6860 leak and a dead shim.
2. shimctl wrote it, containerd reads it: a shim with a task is held by every generation; one
   with no task is held by 1.6 and cleaned as leaked by 1.7 and 2.1.
3. 1.7 as an oracle for the manager's rules: ``shimctl load`` on one copy of a state leaves
   what a 1.7 restart leaves on the other.

Each test runs its generation's private containerd (tests/support/containerd.py) with that
generation's shim and runc first on PATH; shimctl runs with the same PATH and
``--publish-binary`` of that containerd.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from shimctl.shim.task import Mount, TaskClient, runc_options_any
from tests.support import findings
from tests.support.containerd import Containerd, bundle_connection, running_containerd, tool_env
from tests.support.generations import Generation, all_generations, gen_id, generation
from tests.support.helpers import (
    Node,
    find_address_processes,
    pid_alive,
    remove_stale_socket,
    shim_socket_path,
    teardown_node,
    wait_gone,
)
from tests.support.tasks import busybox_rootfs, spec_file

pytestmark = pytest.mark.real

GENERATIONS = all_generations()


# ---------------------------------------------------------------------------------------------
# helpers


def _shimctl(
    gen: Generation, node: Node, *args: str, json_output: bool = True, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``shimctl [--json]`` on the node, with the generation's PATH and publish binary."""
    env = node.env()
    env["PATH"] = tool_env(gen.path_prefix)["PATH"]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shimctl",
            *node.cli_args(),
            "--publish-binary",
            gen.containerd,
            *(["--json"] if json_output else []),
            *args,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _doc(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


def _findings(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return findings.by_id(proc, namespace="default")


def _start(gen: Generation, node: Node, task_id: str, *args: str) -> dict[str, Any]:
    proc = _shimctl(gen, node, "start", task_id, "--runtime", gen.shim, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = _doc(proc)["result"]
    return result


def _client(node: Node, task_id: str) -> TaskClient:
    boot = bundle_connection(node.bundle(task_id))
    assert boot is not None, f"{task_id}: no address and no bootstrap.json"
    return TaskClient.connect(boot.address, "default", timeout=10, api_version=boot.version)


def _create_task(gen: Generation, node: Node, task_id: str) -> int:
    """Create and start the task of a bundle shimctl started, with the generation's runc."""
    with _client(node, task_id) as task:
        task.create(
            task_id,
            str(node.bundle(task_id)),
            rootfs=[Mount("bind", str(busybox_rootfs(node)), options=("rbind", "ro"))],
            options=runc_options_any(root=str(node.runc_root), binary_name=gen.runc),
        )
        return task.start(task_id)


def _kill_task(node: Node, task_id: str) -> int:
    with _client(node, task_id) as task:
        task.kill(task_id, signal.SIGKILL, all_processes=True)
        return task.wait(task_id).exit_status


class _Procs:
    """Processes a test must stop itself, by PID checked against their create time."""

    def __init__(self) -> None:
        self.procs: list[tuple[int, float]] = []

    def add(self, pid: int) -> int:
        self.procs.append((pid, psutil.Process(pid).create_time()))
        return pid

    def kill(self, pid: int) -> None:
        for known, created in self.procs:
            if known == pid:
                _kill_verified(known, created)
                return
        raise AssertionError(f"pid {pid} was not recorded")

    def stop_all(self) -> None:
        for pid, created in self.procs:
            _kill_verified(pid, created)


def _kill_verified(pid: int, created: float) -> None:
    try:
        if abs(psutil.Process(pid).create_time() - created) < 1e-3:
            os.kill(pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    wait_gone(pid, created, timeout=10)


def _shim_ids(node: Node) -> set[str]:
    """Ids of the live shim servers of the node's containerd address."""
    ids: set[str] = set()
    for rec in find_address_processes(node.address):
        argv = list(rec.argv)
        if "-id" in argv and argv[-1] not in ("start", "delete"):
            ids.add(argv[argv.index("-id") + 1])
    return ids


def _wait_until(ok: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _listing(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------------------------
# 1. containerd wrote it, shimctl handles it


def test_containerd_wrote_it(
    gen: Generation, containerd: Containerd, socket_dir_exclusive: None
) -> None:
    cd, node = containerd, containerd.node
    procs = _Procs()
    run_id, dead_id, leak_id = cd.ids("run", "dead", "leak")
    try:
        run_pid = cd.run_container(run_id)
        run_shim = cd.shim_pid(run_id)
        dead_pid = procs.add(cd.run_container(dead_id))
        dead_shim = procs.add(cd.shim_pid(dead_id))
        # containerd #6860: containerd dies after the shim started, before it created the
        # task; containerd stays down. The dead shim dies while it is down.
        leak_shim = procs.add(cd.crash_during_create(leak_id))
        procs.kill(dead_shim)
        assert pid_alive(dead_pid), "the container process outlives its shim"
        leak_files = _listing(node.bundle(leak_id))
        if gen.bootstrap_json:
            # 2.x shims write no address file: containerd writes bootstrap.json, too late.
            assert "address" not in leak_files and "bootstrap.json" not in leak_files
            assert "bootstrap.json" in _listing(node.bundle(run_id))
        else:
            assert "address" in leak_files

        found = _findings(_shimctl(gen, node, "list"))
        run = found[run_id]
        assert run["kind"] == "running", run
        assert (run["shim_pid"], run["task_pids"]) == (run_shim, [run_pid])
        assert run["runtime"] == gen.shim
        assert (run["api_version"], run["protocol"]) == (gen.api_version, "ttrpc")
        table = _shimctl(gen, node, "list", json_output=False)
        row = next(line for line in table.stdout.splitlines() if run_id in line)
        assert f"v{gen.api_version}/ttrpc" in row.split(), table.stdout
        assert found[dead_id]["kind"] == "dead", found[dead_id]
        assert found[dead_id]["runtime"] == gen.shim
        leak = found[leak_id]
        assert leak["shim_pid"] == leak_shim, leak
        # A 2.x leak names no address: shimctl reaches it at the address its shim derives.
        assert leak["kind"] == "leaked", leak
        assert leak["api_version"] == gen.api_version, leak

        gc = _findings(_shimctl(gen, node, "gc", "--min-age", "0"))
        assert (gc[run_id]["action"], gc[run_id]["outcome"]) == ("keep", None)
        assert (gc[dead_id]["action"], gc[dead_id]["outcome"]) == ("delete-dead", "done")
        assert "delete verb: exit status 137" in " ".join(gc[dead_id]["notes"]), gc[dead_id]
        # The runtime's delete verb (this generation's shim, its runc) killed the container.
        assert wait_gone(dead_pid, None, timeout=10)
        assert gc[leak_id]["outcome"] == "done", gc[leak_id]
        assert wait_gone(leak_shim, None, timeout=10)
        gone = [dead_id, leak_id]
        for task_id in gone:
            assert not node.bundle(task_id).exists() and not node.workdir(task_id).exists()
        assert pid_alive(run_pid) and pid_alive(run_shim)

        # containerd comes back: the container still runs, nothing is left for it to clean.
        cd.start()
        assert cd.tasks() == {run_id: (run_pid, "RUNNING")}
        log = cd.log_text(current=True)
        for task_id in gone:
            assert f"id={task_id}" not in log, f"containerd found the bundle of {task_id}"
        cd.ctr("version")
        again = _findings(_shimctl(gen, node, "gc", "--min-age", "0"))
        acted = [i for i, f in again.items() if f["outcome"] is not None and i != leak_id]
        assert acted == [], again
        assert cd.tasks() == {run_id: (run_pid, "RUNNING")}
    finally:
        procs.stop_all()
        for task_id in (dead_id, leak_id):  # sockets no bundle names any more
            remove_stale_socket(shim_socket_path(node.address, "default", task_id))


# ---------------------------------------------------------------------------------------------
# 2. shimctl wrote it, containerd reads it (and each generation's leaked-shim rule)


def test_shimctl_wrote_it(gen: Generation, containerd: Containerd) -> None:
    cd, node = containerd, containerd.node
    procs = _Procs()
    held_id, idle_id = cd.ids("held", "idle")
    try:
        held = _start(gen, node, held_id, "--spec", str(spec_file(node)))
        held_shim = procs.add(held["shim_pid"])
        idle = _start(gen, node, idle_id)
        idle_shim = procs.add(idle["shim_pid"])
        assert held["api_version"] == idle["api_version"] == gen.api_version
        # The layout the shim's generation expects.
        files = _listing(node.bundle(held_id))
        if gen.bootstrap_json:
            assert "bootstrap.json" in files and "address" not in files, files
            doc = json.loads((node.bundle(held_id) / "bootstrap.json").read_text())
            assert doc == {"version": 3, "address": held["address"], "protocol": "ttrpc"}
        else:
            assert "address" in files and "bootstrap.json" not in files, files
        task_pid = procs.add(_create_task(gen, node, held_id))
        files = _listing(node.bundle(held_id))

        cd.restart()
        # The shim with a task: loaded (containerd holds its log fifo), listed, kept.
        assert str(node.bundle(held_id) / "log") in cd.open_files()
        assert cd.tasks()[held_id] == (task_pid, "RUNNING")
        assert pid_alive(held_shim) and pid_alive(task_pid)
        assert _listing(node.bundle(held_id)) == files
        assert node.workdir(held_id).is_dir()
        log = cd.log_text(current=True)
        assert "failed to load shim" not in log, log[-3000:]
        if gen.bootstrap_json:  # 2.x says what it read from bootstrap.json
            cd.wait_log(rf'msg="connecting to shim {held_id}".* protocol=ttrpc version=3\b')

        # The shim with no task: what each generation does with a leaked shim.
        idle_bundle = node.bundle(idle_id)
        if gen.cleans_leaked_shims:
            cd.wait_log(rf'msg="cleaning leaked shim process" id={idle_id}\b')
            assert wait_gone(idle_shim, None, timeout=10)
            cd.wait_log(rf'msg="shim disconnected" id={idle_id}\b')
            if gen.major_minor == (1, 7):
                # Its delete verb fails for the never-created task; the bundle goes anyway.
                cd.wait_log(rf"failed to clean up after shim disconnected.*id={idle_id}\b")
            assert not idle_bundle.exists() and not node.workdir(idle_id).exists()
        else:
            assert pid_alive(idle_shim), "1.6 keeps a leaked shim"
            assert str(idle_bundle / "log") in cd.open_files()
            assert "cleaning leaked shim" not in cd.log_text()
            assert idle_id not in cd.tasks()
            deleted = _shimctl(gen, node, "delete", idle_id)
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr
            assert wait_gone(idle_shim, None, timeout=10)
        assert not idle_bundle.exists()

        # shimctl still handles the held shim while containerd holds it.
        assert _kill_task(node, held_id) == 137
        deleted = _shimctl(gen, node, "delete", held_id)
        assert deleted.returncode == 0, deleted.stdout + deleted.stderr
        assert wait_gone(held_shim, None, timeout=10)
        cd.wait_log(rf'msg="shim disconnected" id={held_id}\b')
        assert held_id not in cd.tasks()
        cd.ctr("version")
    finally:
        procs.stop_all()


# ---------------------------------------------------------------------------------------------
# 3. containerd 1.7 as the oracle of the manager's load rules


def _build_state(gen: Generation, cd: Containerd) -> dict[str, int]:
    """running, leaked (#6860), dead, empty bundle, orphan work dir; containerd left down.
    Returns the container pids by name."""
    node = cd.node
    run_id, dead_id, leak_id = cd.ids("run", "dead", "leak")
    pids = {"run": cd.run_container(run_id), "dead": cd.run_container(dead_id)}
    dead_shim = cd.shim_pid(dead_id)
    cd.crash_during_create(leak_id)
    created = psutil.Process(dead_shim).create_time()
    _kill_verified(dead_shim, created)
    (empty_id, orphan_id) = cd.ids("empty", "orphan")
    (node.task_state / "default" / empty_id).mkdir()
    (node.task_root / "default" / orphan_id).mkdir()
    (node.task_root / "default" / orphan_id / "junk").write_text("x")
    return pids


def _outcome(cd: Containerd, pids: dict[str, int]) -> dict[str, Any]:
    """What is left, with the test's id tag removed so that two nodes compare."""
    node, tag = cd.node, "-" + cd.tag

    def names(items: Any) -> list[str]:
        return sorted(str(n).removesuffix(tag) for n in items)

    sockets = [
        name
        for name in ("run", "dead", "leak")
        if os.path.lexists(shim_socket_path(node.address, "default", name + tag))
    ]
    return {
        "sockets": sockets,
        "bundles": names(_listing(node.task_state / "default")),
        "work dirs": names(_listing(node.task_root / "default")),
        "live shims": names(_shim_ids(node)),
        "live containers": sorted(name for name, pid in pids.items() if pid_alive(pid)),
    }


def test_load_matches_containerd_1_7(node: Node, tmp_path: Path) -> None:
    gen = generation("trixie")
    gen.require()
    if gen.major_minor != (1, 7):
        pytest.skip(f"trixie ships containerd {gen.version}, not 1.7")
    other = Node.under(tmp_path / "oracle")
    made: list[tuple[Node, str]] = []
    try:
        with (
            running_containerd(node, **gen.containerd_options()) as mine,
            running_containerd(other, **gen.containerd_options()) as oracle,
        ):
            made += [(cd.node, i) for cd in (mine, oracle) for i in cd.ids("run", "dead", "leak")]
            mine_pids = _build_state(gen, mine)
            oracle_pids = _build_state(gen, oracle)
            assert _outcome(mine, mine_pids) == _outcome(oracle, oracle_pids)
            before = _outcome(mine, mine_pids)

            load = _shimctl(gen, node, "-n", "default", "load")
            assert load.returncode == 0, load.stdout + load.stderr
            oracle.start()  # the 1.7 restart
            (oracle_leak,) = oracle.ids("leak")
            oracle.wait_log(rf'msg="cleaning leaked shim process" id={oracle_leak}\b')
            _wait_until(lambda: oracle_leak not in _shim_ids(other), "the leak to exit")
            got, want = _outcome(mine, mine_pids), _outcome(oracle, oracle_pids)
            # shimctl's one safe fix here: the dead shim's socket goes too (containerd never
            # touches the socket dir).
            assert (got.pop("sockets"), want.pop("sockets")) == (["run"], ["run", "dead"])
            assert got == want, f"shimctl load: {got}\n1.7 restart: {want}\nbefore: {before}"
            assert want["bundles"] == ["run"] and want["live containers"] == ["run"]
    finally:
        teardown_node(other)
        for n, task_id in made:  # the sockets of dead shims no bundle names any more
            remove_stale_socket(shim_socket_path(n.address, "default", task_id))


# ---------------------------------------------------------------------------------------------
# 2.x bundles: bootstrap.json only, task API v3

V3 = [pytest.param(g, id=gen_id(g)) for g in GENERATIONS if not g.missing and g.bootstrap_json]


@pytest.mark.parametrize("gen", V3 or [pytest.param(generation("sid"), id="sid-missing")])
def test_gc_min_age_counts_a_bootstrap_json_bundle(gen: Generation, node: Node) -> None:
    """An old 2.x leak (bootstrap.json, no address) is past the default --min-age."""
    gen.require()
    leak_id = "oldleak"
    procs = _Procs()
    try:
        shim = procs.add(_start(gen, node, leak_id)["shim_pid"])
        past = time.time() - 600
        bundle = node.bundle(leak_id)
        for path in (bundle / "bootstrap.json", bundle):
            os.utime(path, (past, past), follow_symlinks=False)
        found = _findings(_shimctl(gen, node, "-n", "default", "gc"))[leak_id]
        assert found["kind"] == "leaked", found
        assert found["outcome"] == "done", found
        assert wait_gone(shim, None, timeout=10)
    finally:
        if node.bundle(leak_id).exists():
            _shimctl(gen, node, "delete", leak_id, "--force")
        procs.stop_all()


@pytest.mark.parametrize("gen", V3 or [pytest.param(generation("sid"), id="sid-missing")])
def test_2x_orphan_shim_is_shut_down_over_task_v3(gen: Generation, node: Node) -> None:
    """A 2.x shim whose bundle is gone answers only containerd.task.v3.Task: shimctl finds
    the version itself and shuts the orphan down."""
    gen.require()
    procs = _Procs()
    try:
        shim = procs.add(_start(gen, node, "orph")["shim_pid"])
        shutil.rmtree(node.bundle("orph"))
        shutil.rmtree(node.workdir("orph"))
        found = _findings(_shimctl(gen, node, "-n", "default", "gc", "--min-age", "0"))["orph"]
        assert (found["kind"], found["api_version"]) == ("orphan-process", 3), found
        assert found["outcome"] == "done", found
        assert wait_gone(shim, None, timeout=10)
    finally:
        procs.stop_all()


@pytest.mark.parametrize("gen", V3 or [pytest.param(generation("sid"), id="sid-missing")])
def test_2x_crash_leak(gen: Generation, node: Node, socket_dir_exclusive: None) -> None:
    """containerd 2.x dies after the shim's start verb, before it writes bootstrap.json: the
    2.x shim writes no address file, so the bundle names no address. containerd 2.x then
    fails to load it, deletes the bundle and leaves the shim process running for ever."""
    gen.require()
    procs = _Procs()
    with running_containerd(node, **gen.containerd_options()) as cd:
        (leak_id,) = cd.ids("leak")
        socket = shim_socket_path(node.address, "default", leak_id)
        try:
            shim = procs.add(cd.crash_during_create(leak_id))
            files = _listing(node.bundle(leak_id))
            assert "address" not in files and "bootstrap.json" not in files, files
            gc = _findings(_shimctl(gen, node, "gc", "--min-age", "0"))[leak_id]
            # No address file: reached at the address the shim derives, over task API v3.
            assert (gc["kind"], gc["api_version"], gc["outcome"]) == ("leaked", 3, "done"), gc
            assert wait_gone(shim, None, timeout=10) and not node.bundle(leak_id).exists()
            cd.start()
            assert leak_id not in cd.log_text(current=True)
            assert not os.path.lexists(socket)
        finally:
            procs.stop_all()
            remove_stale_socket(socket)
