"""runc state whose bundle is gone (the invisible `runc init` orphan a badly cleaned leak
leaves): found by list, deleted by gc with runc's own delete, and nobody else's touched.
Real shim, real runc: a task created (runc create: `runc init` waits), its shim killed and its
bundle deleted without the runtime's delete verb, as gc did before the verb ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shimctl.errors import ExitCode
from shimctl.node.bundle import Bundle
from tests.support.findings import by_id
from tests.support.helpers import Node, pid_alive, run_cli, wait_gone
from tests.support.tasks import create_task, spec_file, start_shim, stop_task

pytestmark = pytest.mark.real

RUNC = "runc"


def _runc_state_dir(node: Node, task_id: str) -> Path:
    return node.runc_root / node.namespace / task_id


def _leave_runc_orphan(node: Node, task_id: str) -> int:
    """A created task whose shim is killed and whose bundle is deleted: its `runc init` and
    runc state stay. Returns the `runc init` pid."""
    start_shim(node, task_id)
    init_pid = create_task(node, task_id, start=False)
    shim_pid = json.loads(run_cli(node, "--json", "list").stdout)["result"]["findings"]
    shim = next(f["shim_pid"] for f in shim_pid if f["id"] == task_id)
    proc = psutil.Process(shim)
    os.kill(shim, signal.SIGKILL)
    assert wait_gone(shim, proc.create_time(), 10)
    bundle = Bundle.locate(node.task_state, node.task_root, node.namespace, task_id)
    bundle.delete()
    assert not bundle.path.exists()
    assert (_runc_state_dir(node, task_id) / "state.json").is_file()
    assert pid_alive(init_pid)
    return init_pid


@pytest.fixture
def runc_cleanup(node: Node) -> Iterator[list[str]]:
    ids: list[str] = []
    yield ids
    for task_id in ids:  # whatever the test did: no runc init, no state, no cgroup left
        subprocess.run(
            [RUNC, "--root", str(node.runc_root / node.namespace), "delete", "--force", task_id],
            capture_output=True,
            check=False,
            timeout=20,
        )


def test_gc_deletes_runc_state_whose_bundle_is_gone(node: Node, runc_cleanup: list[str]) -> None:
    runc_cleanup += ["orphan", "sibling"]
    init_pid = _leave_runc_orphan(node, "orphan")
    # A sibling bundle of the same runtime root (its options.json names the root).
    start_shim(node, "sibling", "--spec", str(spec_file(node)))
    sibling_pid = create_task(node, "sibling")

    listed = run_cli(node, "--json", "list")
    found = by_id(listed)["orphan"]
    assert found["kind"] == "orphan-runc-state", found
    assert found["path"] == str(_runc_state_dir(node, "orphan"))
    assert found["task_pids"] == [init_pid]
    assert pid_alive(init_pid)

    gc = run_cli(node, "--json", "gc", "--min-age", "0", "--exit-code")
    assert gc.returncode == ExitCode.GARBAGE_FOUND, gc.stdout + gc.stderr
    done = by_id(gc)["orphan"]
    assert (done["action"], done["outcome"]) == ("runc-delete", "done"), done
    assert wait_gone(init_pid, None, 10)
    assert not _runc_state_dir(node, "orphan").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"**/{node.namespace}/orphan"))
    # The sibling's container is untouched; a second run finds nothing of the kind.
    assert pid_alive(sibling_pid)
    again = run_cli(node, "--json", "gc", "--min-age", "0")
    kinds = {f["kind"] for f in json.loads(again.stdout)["result"]["findings"]}
    assert "orphan-runc-state" not in kinds
    assert stop_task(node, "sibling") == 137
    assert run_cli(node, "delete", "sibling").returncode == 0


def test_runc_state_of_another_state_dir_is_not_a_finding(
    node: Node, tmp_path: Path, runc_cleanup: list[str]
) -> None:
    """Another containerd's container in the same runc root (its bundle elsewhere) is none of
    this state dir's business: not listed, not touched."""
    runc_cleanup += ["theirs", "mine"]
    init_pid = _leave_runc_orphan(node, "theirs")
    state_file = _runc_state_dir(node, "theirs") / "state.json"
    state = json.loads(state_file.read_text())
    labels = state["config"]["labels"]
    elsewhere = str(tmp_path / "other-containerd" / node.namespace / "theirs")
    state["config"]["labels"] = [
        f"bundle={elsewhere}" if lab.startswith("bundle=") else lab for lab in labels
    ]
    state_file.write_text(json.dumps(state))
    start_shim(node, "mine", "--spec", str(spec_file(node)))
    create_task(node, "mine")

    gc = run_cli(node, "--json", "gc", "--min-age", "0")
    assert gc.returncode == 0, gc.stderr
    assert "theirs" not in by_id(gc)
    assert pid_alive(init_pid) and state_file.is_file()
    assert stop_task(node, "mine") == 137
    assert run_cli(node, "delete", "mine").returncode == 0
