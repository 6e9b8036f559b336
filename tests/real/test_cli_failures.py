"""Clear failures with real parts: gc whose metrics cannot be written still cleans a real
leaked shim; doctor, list and delete run by an unprivileged user (setpriv) say what to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from shimctl.errors import ExitCode
from tests.support.helpers import Node, pid_alive, run_cli, wait_gone
from tests.support.tasks import start_shim

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[2]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
# This interpreter lives under /root (mode 0700 here); an unprivileged user runs the
# system's own, with copies of shimctl's compiled dependencies (same CPython ABI).
SYSTEM_PYTHON = "/usr/bin/python3"
DEPENDENCIES = ("click", "psutil", "google")


def test_gc_with_a_missing_metrics_dir_still_cleans_then_fails(node: Node) -> None:
    shim_pid = start_shim(node, "leak1")["shim_pid"]  # a shim with no task: leaked
    started = psutil.Process(shim_pid).create_time()
    missing = node.base / "no-textfile-dir" / "shimctl.prom"
    try:
        proc = run_cli(
            node, "-n", "default", "gc", "--min-age", "0", "--metrics-file", str(missing)
        )
        assert proc.returncode == ExitCode.INVALID_ARGUMENT, proc.stderr
        assert wait_gone(shim_pid, started), "gc did not stop the leaked shim"
        assert not node.bundle("leak1").exists()
        assert "gc: found 1 leaked; acted on 1, failed 0" in proc.stdout
        assert proc.stderr.startswith(f"shimctl: error: --metrics-file {missing}: directory")
        assert "does not exist" in proc.stderr
        assert not missing.parent.exists()
    finally:
        if pid_alive(shim_pid, started):
            os.kill(shim_pid, 9)
            wait_gone(shim_pid, started)
            run_cli(node, "delete", "leak1", "--force")


def test_gc_json_with_a_missing_metrics_dir_prints_one_document(node: Node) -> None:
    (node.workdir("w1")).mkdir(parents=True)  # an orphaned work dir: gc removes it
    missing = node.base / "nowhere" / "shimctl.prom"
    proc = run_cli(
        node, "-n", "default", "gc", "--min-age", "0", "--json", "--metrics-file", str(missing)
    )
    assert proc.returncode == ExitCode.INVALID_ARGUMENT
    assert json.loads(proc.stdout)["command"] == "gc"  # the report, and nothing after it
    assert not node.workdir("w1").exists()


@pytest.fixture
def unprivileged_node() -> Iterator[tuple[Node, dict[str, str]]]:
    """A node under a world-searchable temp dir, with containerd's modes: root 0700, state
    0711 (cmd/containerd/server/server.go at containerd 301026e5), and an environment in
    which uid 65534 can run this tree's shimctl."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, setpriv and the system python3")
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    if probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("the system python3 is another CPython version")
    base = Path(tempfile.mkdtemp(prefix="shimctl-nobody-"))
    try:
        base.chmod(0o755)
        site = base / "site"
        site.mkdir()
        for name in DEPENDENCIES:
            module = __import__(name)
            source = Path(module.__path__[0])
            shutil.copytree(source, site / name, ignore=shutil.ignore_patterns("__pycache__"))
        # This tree's shimctl too: the checkout may be where uid 65534 cannot read (/root).
        shutil.copytree(
            REPO / "shimctl", site / "shimctl", ignore=shutil.ignore_patterns("__pycache__")
        )
        node = Node.under(base / "node")
        node.task_state.mkdir(mode=0o711)
        node.root.chmod(0o700)
        node.state.chmod(0o711)
        env = node.env() | {"PYTHONPATH": str(site), "HOME": "/nonexistent"}
        yield node, env
    finally:
        shutil.rmtree(base)


def _as_nobody(node: Node, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NOBODY, SYSTEM_PYTHON, "-m", "shimctl", *node.cli_args(), *args],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_doctor_without_root_shows_the_checklist(
    unprivileged_node: tuple[Node, dict[str, str]],
) -> None:
    node, env = unprivileged_node
    proc = _as_nobody(node, env, "doctor")
    assert proc.returncode == ExitCode.FAILED_PRECONDITION, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("[FAIL] privileges") and "not root" in lines[0]
    assert "fix: run shimctl as root" in lines[1]
    assert lines[-1].startswith("doctor: 11 checks, ")


@pytest.mark.parametrize("args", [["list"], ["gc"], ["delete", "c1"]], ids=lambda a: a[0])
def test_commands_without_root_say_run_as_root(
    unprivileged_node: tuple[Node, dict[str, str]], args: list[str]
) -> None:
    node, env = unprivileged_node
    proc = _as_nobody(node, env, *args)
    assert proc.returncode == ExitCode.FAILED_PRECONDITION, proc.stderr
    assert proc.stderr == (
        f"shimctl: error: cannot enter the root dir {node.root}: permission denied\n"
        "shimctl: hint: run shimctl as root\n"
    )


def test_delete_without_root_in_a_readable_root_gets_the_hint(
    unprivileged_node: tuple[Node, dict[str, str]],
) -> None:
    node, env = unprivileged_node
    node.root.chmod(0o711)  # searchable: the bundle itself is what cannot be read
    bundle = node.bundle("c1")
    bundle.mkdir(parents=True)
    bundle.chmod(0o700)
    proc = _as_nobody(node, env, "delete", "c1")
    assert proc.returncode == ExitCode.FAILED_PRECONDITION, proc.stderr
    assert "\nshimctl: hint: run shimctl as root" in proc.stderr
    assert "name one namespace" not in proc.stderr and "Traceback" not in proc.stderr
    assert bundle.is_dir()
