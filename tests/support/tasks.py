"""Test helpers that drive shimctl and real runc tasks (busybox) on a test's private node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil

from shimctl.node.mounts import unmount_all
from shimctl.node.spec import default_spec
from shimctl.shim.task import Mount, TaskClient, runc_options_any
from tests.support.helpers import (
    Node,
    populate_busybox_rootfs,
    remove_stale_socket,
    run_cli,
    wait_gone,
)


def spec_file(node: Node, args: list[str] | None = None, **annotations: str) -> Path:
    """A config.json for `shimctl start --spec`, running `args` (default: sleep 600)."""
    spec = default_spec(args or ["/bin/sleep", "600"])
    if annotations:
        spec["annotations"] = annotations
    path = node.base / f"spec-{len(list(node.base.glob('spec-*.json')))}.json"
    path.write_text(json.dumps(spec))
    return path


def start_shim(node: Node, task_id: str, *args: str, namespace: str | None = None) -> Any:
    """`shimctl start` through the CLI; asserts success and returns the JSON result."""
    ns = ["-n", namespace] if namespace else []
    proc = run_cli(node, *ns, "start", task_id, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["result"]


def busybox_rootfs(node: Node) -> Path:
    """A busybox tree bind-mounted (read-only) onto bundles' rootfs, as a snapshot would be."""
    rootfs = node.base / "busybox-rootfs"
    if not rootfs.exists():
        populate_busybox_rootfs(rootfs)
        for mount_point in ("proc", "dev", "sys"):
            (rootfs / mount_point).mkdir(exist_ok=True)
    return rootfs


def client(node: Node, task_id: str, namespace: str | None = None) -> TaskClient:
    address = (node.bundle(task_id, namespace) / "address").read_text()
    return TaskClient.connect(address, namespace or node.namespace, timeout=10)


def create_task(
    node: Node, task_id: str, *, start: bool = True, namespace: str | None = None
) -> int:
    """Create (and start) the runc task of a bundle `shimctl start` made; returns its pid."""
    bundle = node.bundle(task_id, namespace)
    with client(node, task_id, namespace) as task:
        pid = task.create(
            task_id,
            str(bundle),
            rootfs=[Mount("bind", str(busybox_rootfs(node)), options=("rbind", "ro"))],
            options=runc_options_any(root=str(node.runc_root)),
        )
        if start:
            pid = task.start(task_id)
    return pid


def stop_task(node: Node, task_id: str, namespace: str | None = None) -> int:
    """SIGKILL the task and wait for its exit; returns the exit status (137)."""
    with client(node, task_id, namespace) as task:
        task.kill(task_id, 9, all_processes=True)
        return task.wait(task_id).exit_status


class Started:
    """What a test started (shims, tasks, runc containers), to stop by PID at its end."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.procs: list[tuple[int, float]] = []
        self.containers: list[tuple[str, str]] = []  # (namespace, id) in node.runc_root
        self.sockets: list[Path] = []  # sockets the test made itself

    def process(self, pid: int) -> int:
        self.procs.append((pid, psutil.Process(pid).create_time()))
        return pid

    def container(self, task_id: str, namespace: str = "default") -> None:
        self.containers.append((namespace, task_id))

    def stop_all(self) -> None:
        for pid, created in self.procs:
            try:
                proc = psutil.Process(pid)
                if abs(proc.create_time() - created) > 1e-3:
                    continue  # the PID was reused: not ours
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except (psutil.NoSuchProcess, ProcessLookupError):
                continue
        for pid, created in self.procs:
            wait_gone(pid, created, timeout=10)
        for namespace, task_id in self.containers:
            subprocess.run(
                [
                    "runc",
                    "--root",
                    str(self.node.runc_root / namespace),
                    "delete",
                    "--force",
                    task_id,
                ],
                capture_output=True,
                check=False,
            )
        for bundle in self.node.task_state.glob("*/*"):
            unmount_all(bundle / "rootfs")
        for made in self.sockets:
            if os.path.lexists(made):
                os.unlink(made)
        for address_file in self.node.task_state.glob("*/*/address"):
            path = address_file.read_text().strip().removeprefix("unix://")
            remove_stale_socket(Path(path))
