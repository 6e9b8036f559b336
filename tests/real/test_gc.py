"""`shimctl list`, `gc` and `load` over one state dir holding every kind of item at once,
with real shims and real runc tasks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from shimctl.errors import ExitCode
from shimctl.shim.task import TaskClient
from tests.support.findings import by_id
from tests.support.helpers import Node, pid_alive, run_cli, shim_socket_path, wait_gone
from tests.support.tasks import Started, client, create_task, spec_file, start_shim
from tests.support.tree import snapshot

pytestmark = pytest.mark.real


@dataclass
class Scene:
    node: Node
    pids: dict[str, int]  # shim pid per bundle id
    task_pids: dict[str, int]
    stale_socket: Path

    def answers(self, task_id: str) -> bool:
        try:
            with client(self.node, task_id) as c:
                return c.connect_info(task_id, timeout=2).shim_pid == self.pids[task_id]
        except Exception:  # noqa: BLE001 - any failure: not that shim
            return False


def _findings(proc: Any) -> dict[str, dict[str, Any]]:
    return by_id(proc)


def _tree(node: Node) -> list[str]:
    """Every path under root and state: a listing to compare."""
    return sorted(snapshot(node.root, node.state))


@pytest.fixture
def scene(node: Node, socket_dir_exclusive: None) -> Iterator[Scene]:
    started = Started(node)
    try:
        yield _build_scene(node, started)
    finally:
        started.stop_all()


def _build_scene(node: Node, started: Started) -> Scene:
    pids: dict[str, int] = {}
    task_pids: dict[str, int] = {}
    sleep = str(spec_file(node))
    # running: a real busybox sleep
    pids["run1"] = start_shim(node, "run1", "--spec", sleep)["shim_pid"]
    task_pids["run1"] = create_task(node, "run1")
    # stopped: exited, not deleted
    pids["stop1"] = start_shim(node, "stop1", "--spec", str(spec_file(node, ["/bin/true"])))[
        "shim_pid"
    ]
    create_task(node, "stop1")
    with client(node, "stop1") as c:
        assert c.wait("stop1", timeout=10).exit_status == 0
    # sandbox with a member bundle whose task runs in the sandbox's shim
    pids["sb1"] = start_shim(node, "sb1")["shim_pid"]
    pids["mem1"] = start_shim(node, "mem1", "--sandbox", "sb1", "--spec", sleep)["shim_pid"]
    task_pids["mem1"] = create_task(node, "mem1")
    # leaked: a shim with no task (containerd #6860)
    pids["leak1"] = start_shim(node, "leak1")["shim_pid"]
    # dead, with a task (runtime file) and without
    pids["dead1"] = start_shim(node, "dead1", "--spec", sleep)["shim_pid"]
    task_pids["dead1"] = create_task(node, "dead1")
    pids["dead2"] = start_shim(node, "dead2")["shim_pid"]
    for dead in ("dead1", "dead2"):
        os.kill(pids[dead], signal.SIGKILL)
        assert wait_gone(pids[dead], None, timeout=10)
    # hung: SIGSTOPped (connects, never answers)
    pids["hung1"] = start_shim(node, "hung1")["shim_pid"]
    os.kill(pids["hung1"], signal.SIGSTOP)
    # empty bundle
    (node.task_state / "default" / "empty1").mkdir()
    # a bundle without shim-binary-path whose shim lives
    pids["nobin1"] = start_shim(node, "nobin1")["shim_pid"]
    (node.bundle("nobin1") / "shim-binary-path").unlink()
    # orphan work dir, stale hidden dirs
    (node.task_root / "default" / "orphanwork1").mkdir()
    (node.task_state / "default" / ".hidden1" / "rootfs").mkdir(parents=True)
    (node.task_root / "default" / ".hidden2").mkdir()
    # a shim process whose bundle was removed
    pids["orph1"] = start_shim(node, "orph1")["shim_pid"]
    shutil.rmtree(node.bundle("orph1"))
    shutil.rmtree(node.workdir("orph1"))
    # a stale socket in the shim socket dir: bound, then closed (refuses connections), named as
    # a shim of this containerd derives it for an id the node knows (the orphan work dir)
    stale = shim_socket_path(node.address, "default", "orphanwork1")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    os.utime(stale, (0, os.stat(stale).st_mtime - 60), follow_symlinks=False)
    for pid in [*pids.values(), *task_pids.values()]:
        if pid_alive(pid):
            started.process(pid)
    for task_id in ("run1", "stop1", "mem1", "dead1"):
        started.container(task_id)
    started.sockets.append(stale)
    return Scene(node, pids, task_pids, stale)


def test_gc_cleans_every_kind_of_garbage_and_keeps_the_rest(scene: Scene) -> None:
    node = scene.node
    listed = run_cli(node, "--timeout", "1", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    # Other tests' dead shims may leave stale sockets in the shared socket dir too.
    kinds = {
        i: f["kind"]
        for i, f in _findings(listed).items()
        if f["kind"] != "stale-socket" or i == scene.stale_socket.name
    }
    assert kinds == {
        "run1": "running",
        "stop1": "stopped",
        "sb1": "sandbox",
        "mem1": "running",
        "leak1": "leaked",
        "dead1": "dead",
        "dead2": "dead",
        "hung1": "hung",
        "empty1": "empty",
        "nobin1": "leaked",
        "orphanwork1": "orphan-workdir",
        ".hidden1": "stale-hidden",
        ".hidden2": "stale-hidden",
        "orph1": "orphan-process",
        scene.stale_socket.name: "stale-socket",
    }
    listing = _findings(listed)
    assert listing["run1"]["task_pids"] == [scene.task_pids["run1"]]
    assert listing["run1"]["shim_pid"] == scene.pids["run1"]
    assert listing["mem1"]["sandbox"] == "sb1"

    proc = run_cli(node, "--timeout", "1", "gc", "--min-age", "0", "--json")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = _findings(proc)
    # Kept, and still answering.
    for keep in ("run1", "stop1", "sb1", "mem1"):
        assert found[keep]["action"] == "keep", found[keep]
        assert node.bundle(keep).is_dir() and node.workdir(keep).is_dir()
        assert scene.answers(keep), keep
    assert pid_alive(scene.task_pids["run1"]) and pid_alive(scene.task_pids["mem1"])
    # Garbage: process, bundle, work dir and socket gone.
    for gone in ("leak1", "dead1", "dead2", "nobin1"):
        assert found[gone]["outcome"] == "done", found[gone]
        assert not node.bundle(gone).exists(), gone
        assert not node.workdir(gone).exists(), gone
        assert wait_gone(scene.pids[gone], None, timeout=10), gone
        assert not os.path.lexists(shim_socket_path(node.address, "default", gone)), gone
    assert wait_gone(scene.task_pids["dead1"], None, timeout=10)  # runc delete --force
    assert found["dead2"]["notes"] and any("runtime" in n for n in found["dead2"]["notes"])
    assert not node.bundle("empty1").exists()
    assert not (node.task_root / "default" / "orphanwork1").exists()
    assert not (node.task_state / "default" / ".hidden1").exists()
    assert not (node.task_root / "default" / ".hidden2").exists()
    assert wait_gone(scene.pids["orph1"], None, timeout=10)
    assert not os.path.lexists(shim_socket_path(node.address, "default", "orph1"))
    assert not os.path.lexists(scene.stale_socket)
    # The hung shim is reported and left: bundle and process stay.
    assert found["hung1"]["kind"] == "hung" and found["hung1"]["action"] == "report"
    assert node.bundle("hung1").is_dir()
    assert psutil.Process(scene.pids["hung1"]).status() == psutil.STATUS_STOPPED

    again = run_cli(node, "--timeout", "1", "gc", "--min-age", "0", "--json")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)["result"]
    # (Sockets of other tests' shims that died meanwhile are not this node's: see above.)
    ours = [f for f in doc["findings"] if f["kind"] != "stale-socket"]
    assert all(f["outcome"] is None for f in ours), doc["findings"]
    assert set(doc["counts"]) - {"stale-socket"} == {"running", "stopped", "sandbox", "hung"}


def test_dry_run_changes_nothing(scene: Scene) -> None:
    node = scene.node
    before = _tree(node)
    proc = run_cli(node, "--timeout", "1", "gc", "--min-age", "0", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    found = _findings(proc)
    assert found["leak1"]["outcome"] == "dry-run"
    assert found["dead1"]["action"] == "delete-dead"
    assert _tree(node) == before
    for shim in ("run1", "leak1", "nobin1", "orph1", "sb1"):
        assert pid_alive(scene.pids[shim]), shim
    assert os.path.lexists(scene.stale_socket)
    text = run_cli(node, "--timeout", "1", "load", "--dry-run")
    assert text.returncode == 0 and "would act on" in text.stdout
    assert _tree(node) == before


def test_min_age_spares_young_items(scene: Scene) -> None:
    node = scene.node
    before = _tree(node)
    proc = run_cli(node, "--timeout", "1", "gc", "--json")  # default --min-age 5m
    assert proc.returncode == 0, proc.stderr
    found = _findings(proc)
    assert found["leak1"]["action"] == "keep"
    assert any("min-age" in n for n in found["leak1"]["notes"])
    assert _tree(node) == before
    assert pid_alive(scene.pids["leak1"])


def test_load_applies_the_manager_rule(scene: Scene) -> None:
    node = scene.node
    proc = run_cli(node, "--timeout", "1", "load", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = _findings(proc)
    # containerd's rule: an exited, undeleted task has no pids, so it is cleaned as leaked.
    assert found["stop1"]["kind"] == "leaked" and found["stop1"]["outcome"] == "done"
    assert not node.bundle("stop1").exists()
    assert wait_gone(scene.pids["stop1"], None, timeout=10)
    # Running tasks and the hung shim's bundle stay.
    assert scene.answers("run1") and node.bundle("hung1").is_dir()
    assert scene.answers("sb1") and scene.answers("mem1")


def test_load_refuses_while_containerd_answers(node: Node, socket_dir_exclusive: None) -> None:
    start_shim(node, "leak1")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(node.address)
        listener.listen()
        proc = run_cli(node, "load")
        assert proc.returncode == ExitCode.FAILED_PRECONDITION
        assert node.address in proc.stderr and "--force" in proc.stderr
        assert node.bundle("leak1").is_dir()
        forced = run_cli(node, "load", "--force")
        assert forced.returncode == 0, forced.stderr
        assert not node.bundle("leak1").exists()


def test_list_text_is_a_plain_table(node: Node) -> None:
    start_shim(node, "c1")
    proc = run_cli(node, "list")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAMESPACE", "ID", "KIND"]
    row = next(line for line in lines[1:] if line.split()[:2] == ["default", "c1"])
    assert row.split()[2] == "leaked"
    # Aligned columns: each value starts where its header does.
    assert row.index(" c1 ") + 1 == lines[0].index("ID")
    assert row.index("leaked") == lines[0].index("KIND")
    assert "\x1b[" not in proc.stdout
    assert run_cli(node, "delete", "c1").returncode == 0


def test_namespaces_are_covered_unless_one_is_named(node: Node, socket_dir_exclusive: None) -> None:
    start_shim(node, "a1", namespace="ns-a")
    start_shim(node, "b1", namespace="ns-b")
    everything = json.loads(run_cli(node, "list", "--json").stdout)["result"]["findings"]
    bundles = {(f["namespace"], f["id"]) for f in everything if f["kind"] != "stale-socket"}
    assert bundles == {("ns-a", "a1"), ("ns-b", "b1")}
    proc = run_cli(node, "-n", "ns-a", "gc", "--min-age", "0", "--json")
    assert proc.returncode == 0
    assert {f["id"] for f in json.loads(proc.stdout)["result"]["findings"]} == {"a1"}
    assert not node.bundle("a1", "ns-a").exists()
    assert node.bundle("b1", "ns-b").is_dir()
    with TaskClient.connect(
        (node.bundle("b1", "ns-b") / "address").read_text(), "ns-b", timeout=5
    ) as c:
        assert c.connect_info("b1").shim_pid > 0
    assert run_cli(node, "gc", "--min-age", "0").returncode == 0
    assert not node.bundle("b1", "ns-b").exists()
