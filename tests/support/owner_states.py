"""The states of containerd's own records that decide who owns a shim, each made through a real
containerd of one generation and its real API (the table of records as evidence, README
"Ownership"):

- a stopped task whose container record is gone (a client deleted the record, not the task);
- containerd #6771: the task's process killed while containerd is down, containerd started
  again (1.6 keeps the stopped task; 1.7 and 2.1 clean it at their restart);
- a running task whose record is gone (orphaned: containerd's API cannot stop it);
- a shim `shimctl start` started (no record by design), running a task;
- a stopped task with its record and an exit containerd saw;
- a task stuck in ``created`` (Tasks.Create without Start), paused and plain running tasks.

:class:`OwnerStates` remembers what it made and undoes it at :meth:`OwnerStates.close`: a
deleted record is created again (from the copy taken before the delete) so that the
containerd fixture's cleanup (``ctr task rm -f``, which loads the record first) reaches the
task; shimctl's own task is killed and deleted through shimctl.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from google.protobuf import empty_pb2

from shimctl.records.proto.api.services.containers.v1 import containers_pb2
from shimctl.records.proto.api.services.sandbox.v1 import sandbox_pb2
from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
from shimctl.records.proto.api.types import sandbox_pb2 as sandbox_types
from shimctl.shim.task import Mount, TaskClient, runc_options_any
from tests.support.containerd import Containerd, bundle_connection, tool_env
from tests.support.generations import Generation
from tests.support.helpers import DEFAULT_RUNC_ROOT, Node, pid_alive, wait_gone
from tests.support.tasks import busybox_rootfs, spec_file

#: gRPC deadline of every call the tests make to containerd.
API_TIMEOUT = 10.0
#: Seconds between #6771's exit and containerd's start (see OwnerStates.exited_while_down).
EXIT_MARGIN = 2.0


class Api:
    """containerd's gRPC API for making records the way clients make them."""

    def __init__(self, node: Node) -> None:
        self.channel = grpc.insecure_channel(f"unix:{node.address}")

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: str, request: Any, reply: Any, namespace: str) -> Any:
        call = self.channel.unary_unary(
            method,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply.FromString,
        )
        return call(request, timeout=API_TIMEOUT, metadata=(("containerd-namespace", namespace),))

    def container(self, cid: str, namespace: str = "default") -> Any:
        return self._call(
            "/containerd.services.containers.v1.Containers/Get",
            containers_pb2.GetContainerRequest(id=cid),
            containers_pb2.GetContainerResponse,
            namespace,
        ).container

    def create_container(self, record: Any, namespace: str = "default") -> None:
        self._call(
            "/containerd.services.containers.v1.Containers/Create",
            containers_pb2.CreateContainerRequest(container=record),
            containers_pb2.CreateContainerResponse,
            namespace,
        )

    def delete_container(self, cid: str, namespace: str = "default") -> None:
        self._call(
            "/containerd.services.containers.v1.Containers/Delete",
            containers_pb2.DeleteContainerRequest(id=cid),
            empty_pb2.Empty,
            namespace,
        )

    def create_task(self, cid: str, namespace: str = "default") -> int:
        """Tasks.Create without Start (no IO, the record's runtime): the task stays
        ``created``, its ``runc init`` waiting on the exec fifo. Returns that pid."""
        reply = self._call(
            "/containerd.services.tasks.v1.Tasks/Create",
            tasks_pb2.CreateTaskRequest(container_id=cid),
            tasks_pb2.CreateTaskResponse,
            namespace,
        )
        return int(reply.pid)

    def create_sandbox(self, sid: str, namespace: str = "default") -> None:
        self._call(
            "/containerd.services.sandbox.v1.Store/Create",
            sandbox_pb2.StoreCreateRequest(
                sandbox=sandbox_types.Sandbox(
                    sandbox_id=sid,
                    runtime=sandbox_types.Sandbox.Runtime(name="io.containerd.runc.v2"),
                    labels={"io.cri-containerd.kind": "sandbox"},
                )
            ),
            sandbox_pb2.StoreCreateResponse,
            namespace,
        )


def run_shimctl(
    gen: Generation, node: Node, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``shimctl <node options> --publish-binary <gen's containerd> *args`` with the
    generation's shim and runc first on PATH (as its containerd runs them)."""
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
            *args,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_until(ok: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Made:
    """One state as made: the task's process (pid 0 when none runs) and where it lives."""

    id: str
    pid: int
    pid_created: float | None
    shim_pid: int
    shim_created: float
    bundle: Path
    runc_state: Path
    exit_status: int | None = None

    @property
    def process_alive(self) -> bool:
        return self.pid > 0 and pid_alive(self.pid, self.pid_created)

    @property
    def shim_alive(self) -> bool:
        return pid_alive(self.shim_pid, self.shim_created)


def _created(pid: int) -> float:
    return psutil.Process(pid).create_time()


def kill_verified(pid: int, created: float | None) -> None:
    """SIGKILL ``pid`` only if it is still the process of that create time; wait until gone."""
    proc = psutil.Process(pid)
    if created is not None and abs(proc.create_time() - created) >= 1e-3:
        raise AssertionError(f"pid {pid} is no longer the process the test started")
    os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, created, timeout=10):
        raise AssertionError(f"pid {pid} survived SIGKILL")


@dataclass
class OwnerStates:
    """Makes the states on ``cd`` (running) and undoes them at :meth:`close`."""

    gen: Generation
    cd: Containerd
    namespace: str = "default"
    _records: dict[str, Any] = field(default_factory=dict)  # records deleted by a state
    _shimctl: list[str] = field(default_factory=list)

    @property
    def node(self) -> Node:
        return self.cd.node

    def _made(self, cid: str, pid: int, exit_status: int | None = None) -> Made:
        shim = self.cd.shim_pid(cid, self.namespace)
        return Made(
            id=cid,
            pid=pid,
            pid_created=_created(pid) if pid > 0 and pid_alive(pid) else None,
            shim_pid=shim,
            shim_created=_created(shim),
            bundle=self.node.bundle(cid, self.namespace),
            runc_state=Path(DEFAULT_RUNC_ROOT) / self.namespace / cid,
            exit_status=exit_status,
        )

    def _drop_record(self, cid: str) -> None:
        api = Api(self.node)
        try:
            self._records[cid] = api.container(cid, self.namespace)
            api.delete_container(cid, self.namespace)
        finally:
            api.close()
        assert cid not in self.cd.containers(self.namespace)

    def _exited(self, cid: str, status: int) -> Made:
        self.cd.ctr(
            "run", "-d", "--null-io", "--rootfs", str(self.cd.rootfs), cid,
            "/bin/sh", "-c", f"exit {status}",
        )  # fmt: skip
        self.cd.wait_task(cid, "STOPPED")
        return self._made(cid, 0, exit_status=status)

    # -- the states ---------------------------------------------------------------------------

    def running(self, name: str) -> Made:
        (cid,) = self.cd.ids(name)
        return self._made(cid, self.cd.run_container(cid))

    def paused(self, name: str) -> Made:
        made = self.running(name)
        self.cd.ctr("task", "pause", made.id)
        self.cd.wait_task(made.id, "PAUSED")
        return made

    def stopped_with_record(self, name: str, status: int = 5) -> Made:
        """The task exited while containerd ran (containerd saw the exit); record kept."""
        (cid,) = self.cd.ids(name)
        return self._exited(cid, status)

    def stopped_no_record(self, name: str, status: int = 3) -> Made:
        """The task exited; then a client deleted its container record (not its task)."""
        (cid,) = self.cd.ids(name)
        made = self._exited(cid, status)
        self._drop_record(cid)
        return made

    def orphaned(self, name: str) -> Made:
        """The task runs; a client deleted its container record."""
        made = self.running(name)
        self._drop_record(made.id)
        return made

    def created(self, name: str) -> Made:
        """Tasks.Create without Start: ``ctr task ls`` says CREATED, ``runc init`` waits."""
        (cid,) = self.cd.ids(name)
        self.cd.ctr("container", "create", "--rootfs", str(self.cd.rootfs), cid, "/bin/true")
        api = Api(self.node)
        try:
            pid = api.create_task(cid, self.namespace)
        finally:
            api.close()
        self.cd.wait_task(cid, "CREATED")
        return self._made(cid, pid)

    def kill_while_down(self, made: Made) -> None:
        """containerd #6771's middle: containerd is stopped; kill the task's process (by its
        PID and create time) so its exit is never delivered."""
        assert not self.cd.running, "containerd must be down"
        kill_verified(made.pid, made.pid_created)

    def exited_while_down(self, name: str) -> Made:
        """containerd #6771, whole: a running task, containerd SIGKILLed (by its PID), the
        task's process killed while it is down, containerd started again. Returns the state
        as made (the caller checks what the generation's restart did with it)."""
        made = self.running(name)
        self.cd.kill()
        self.kill_while_down(made)
        # A process's start time as /proc gives it (psutil's create_time) counts from btime,
        # which /proc/stat has in whole seconds: containerd's start may read up to a second
        # early. Left a clear margin, the exit is unambiguously before containerd's start.
        time.sleep(EXIT_MARGIN)
        self.cd.start()
        return made

    def shimctl_started(self, name: str) -> Made:
        """`shimctl start` (the generation's shim) and a running task through its ttrpc API,
        with the generation's runc; the bundle carries shimctl's mark, no record exists."""
        import json

        (cid,) = self.cd.ids(name)
        spec = str(spec_file(self.node))
        proc = run_shimctl(
            self.gen, self.node, "--json", "start", cid, "--runtime", self.gen.shim, "--spec", spec
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        shim = int(json.loads(proc.stdout)["result"]["shim_pid"])
        self._shimctl.append(cid)
        bundle = self.node.bundle(cid, self.namespace)
        with self._client(cid) as task:
            task.create(
                cid,
                str(bundle),
                rootfs=[Mount("bind", str(busybox_rootfs(self.node)), options=("rbind", "ro"))],
                options=runc_options_any(root=str(self.node.runc_root), binary_name=self.gen.runc),
            )
            pid = task.start(cid)
        return Made(
            id=cid,
            pid=pid,
            pid_created=_created(pid),
            shim_pid=shim,
            shim_created=_created(shim),
            bundle=bundle,
            runc_state=self.node.runc_root / self.namespace / cid,
        )

    def _client(self, cid: str) -> TaskClient:
        boot = bundle_connection(self.node.bundle(cid, self.namespace))
        assert boot is not None, f"{cid}: no address and no bootstrap.json"
        return TaskClient.connect(
            boot.address, self.namespace, timeout=10, api_version=boot.version
        )

    # -- undo ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop shimctl's tasks (through shimctl) and give deleted records back, so that the
        containerd fixture's cleanup reaches every task containerd made."""
        for cid in self._shimctl:
            if not self.node.bundle(cid, self.namespace).exists():
                continue
            with contextlib.suppress(Exception), self._client(cid) as task:
                task.kill(cid, signal.SIGKILL, all_processes=True)
                task.wait(cid)
            run_shimctl(self.gen, self.node, "delete", cid)
        if not self._records:
            return
        if not self.cd.running:
            self.cd.start()
        api = Api(self.node)
        try:
            for record in self._records.values():
                with contextlib.suppress(grpc.RpcError):  # ALREADY_EXISTS: given back before
                    api.create_container(record, self.namespace)
        finally:
            api.close()
