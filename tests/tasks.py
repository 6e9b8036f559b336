"""Test helpers that drive shimctl and real runc tasks (busybox) on a test's private node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shimctl.shim.task import Mount, TaskClient, runc_options_any
from shimctl.spec import default_spec
from tests.helpers import Node, populate_busybox_rootfs, run_cli


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
        task.kill(task_id, 9, all=True)
        return task.wait(task_id).exit_status
