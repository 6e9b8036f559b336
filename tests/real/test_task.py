"""TaskClient against the REAL containerd-shim-runc-v2 (started here, cleaned up by pid)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from shimctl import errors
from shimctl.shim.task import TaskClient, runc_options_any
from shimctl.shim.ttrpc import TtrpcClient
from tests.support import helpers
from tests.support.fakeshim import FakeShim
from tests.support.helpers import Node

SHIM = "/usr/bin/containerd-shim-runc-v2"
CONTAINERD = "/usr/bin/containerd"
NAMESPACE = "ttrpc-test"
TASK_ID = "c1"
RPC_TIMEOUT = 20.0
EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events"


class LogDrain:
    """Holds the bundle's `log` fifo open O_RDWR|O_NONBLOCK and keeps reading it."""

    def __init__(self, fifo: Path) -> None:
        os.mkfifo(fifo, 0o700)
        self.fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.text = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shim-log-drain", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return
            if len(self.text) < 1 << 20:
                self.text += chunk

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.fd)


@dataclass
class RealShim:
    node: Node
    bundle: Path
    address: str
    socket: Path
    pid: int
    create_time: float
    log: LogDrain
    events: FakeShim

    def topics(self) -> list[str]:
        """Topics of the Events/Forward calls the shim made, in order."""
        out: list[str] = []
        for seen in list(self.events.seen):
            req = seen.request
            if (req.service, req.method) == (EVENTS_SERVICE, "Forward"):
                m = re.search(rb"/tasks/[a-z-]+", req.payload)
                out.append(m.group().decode() if m else "?")
        return out

    def client(self, api_version: int = 2) -> TaskClient:
        return TaskClient.connect(
            self.address, NAMESPACE, timeout=RPC_TIMEOUT, api_version=api_version
        )


def _runc_spec() -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="shimctl-spec-") as d:
        subprocess.run(
            [shutil.which("runc") or "runc", "spec"],
            cwd=d,
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        spec: dict[str, object] = json.loads(Path(d, "config.json").read_text())
    process = spec["process"]
    assert isinstance(process, dict)
    process["terminal"] = False
    process["args"] = ["/bin/sleep", "1000"]
    root = spec["root"]
    assert isinstance(root, dict)
    root["path"] = "rootfs"
    return spec


def _kill_by_pid(pid: int, create_time: float) -> None:
    """SIGKILL `pid` only if it is still the process we recorded; wait until gone/zombie."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > 1e-3:
            return
        if proc.status() != psutil.STATUS_ZOMBIE:
            os.kill(pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return
    assert helpers.wait_gone(pid, create_time, timeout=10), f"pid {pid} survived SIGKILL"


@pytest.fixture
def shim(node: Node) -> Iterator[RealShim]:
    helpers.require_real_binaries()
    bundle = node.bundle(TASK_ID, NAMESPACE)
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(_runc_spec(), indent=2))
    helpers.populate_busybox_rootfs(bundle / "rootfs")
    log = LogDrain(bundle / "log")  # opened before the shim starts, drained until the end
    # Stand in for containerd's ttrpc socket: with nobody there, each event the shim
    # publishes blocks ~5 s in dial, and after Shutdown it lingers ~15 s before exiting
    # ("publisher not closed").
    events = FakeShim(node.ttrpc_address, "empty").__enter__()
    env = dict(os.environ, TTRPC_ADDRESS=node.ttrpc_address)
    recorded: list[tuple[int, float]] = []
    socket_path: Path | None = None
    try:
        proc = subprocess.run(
            [
                SHIM,
                "-namespace", NAMESPACE,
                "-address", node.address,
                "-publish-binary", CONTAINERD,
                "-id", TASK_ID,
                "start",
            ],
            cwd=bundle,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            process_group=0,
            timeout=60,
            check=False,
        )  # fmt: skip
        # Record the server process(es) at once, before anything else can fail.
        recorded = [(r.pid, r.create_time) for r in helpers.find_address_processes(node.address)]
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        address = proc.stdout.decode()
        assert address.startswith("unix:///run/containerd/s/"), address
        assert address == address.strip()  # printed with no newline
        socket_path = Path(address.removeprefix("unix://"))
        assert socket_path == helpers.shim_socket_path(node.address, NAMESPACE, TASK_ID)
        assert len(recorded) == 1, recorded
        pid, create_time = recorded[0]
        yield RealShim(node, bundle, address, socket_path, pid, create_time, log, events)
    finally:
        # 1. The container, if a test left one: private runc root, so this is only ours.
        runc_root = node.runc_root / NAMESPACE
        if (runc_root / TASK_ID).exists():
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "--force", TASK_ID],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        # 2. Every shim process we started, by pid and create_time.
        for pid, create_time in recorded:
            _kill_by_pid(pid, create_time)
        # 3. Its socket, if the shim did not remove it.
        if socket_path is not None:
            with contextlib.suppress(OSError):
                if socket_path.is_socket():
                    socket_path.unlink()
        events.close()
        log.close()


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.real
def test_task_lifecycle(shim: RealShim) -> None:
    with shim.client() as task:
        info = task.connect_info(TASK_ID)
        assert info.shim_pid == shim.pid
        assert helpers.pid_alive(info.shim_pid, shim.create_time)
        assert info.task_pid == 0

        pid = task.create(
            TASK_ID,
            str(shim.bundle),
            options=runc_options_any(root=str(shim.node.runc_root)),
        )
        assert pid > 0
        st = task.state(TASK_ID)
        assert (st.id, st.bundle, st.pid, st.status) == (TASK_ID, str(shim.bundle), pid, "created")
        assert st.exited_at is None  # zero-time quirk
        assert task.pids(TASK_ID) == [pid]

        assert task.start(TASK_ID) == pid
        st = task.state(TASK_ID)
        assert (st.status, st.pid, st.exit_status, st.exited_at) == ("running", pid, 0, None)
        assert pid in task.pids(TASK_ID)
        assert task.connect_info(TASK_ID).task_pid == pid

        # Shutdown with a task present is a no-op; the connection stays up.
        task.shutdown(TASK_ID)
        assert task.state(TASK_ID).status == "running"

        task.kill(TASK_ID, signal.SIGKILL)
        ex = task.wait(TASK_ID)
        assert ex.exit_status == 137
        assert ex.exited_at is not None and ex.exited_at.tzinfo is not None

        st = task.state(TASK_ID)
        assert (st.status, st.exit_status, st.exited_at) == ("stopped", 137, ex.exited_at)
        assert task.pids(TASK_ID) == []

        deleted = task.delete(TASK_ID)
        assert (deleted.pid, deleted.exit_status) == (pid, 137)
        assert deleted.exited_at == ex.exited_at
        with pytest.raises(errors.NotFound, match="container not created: not found"):
            task.delete(TASK_ID)
        with pytest.raises(errors.NotFound):
            task.state(TASK_ID)

        raw: TtrpcClient = task.ttrpc
        with pytest.raises(errors.NotImplementedByShim, match="method Bogus"):
            raw.call(task.service, "Bogus", b"", timeout=5, namespace=NAMESPACE)
        with pytest.raises(
            errors.NotImplementedByShim, match=r"service containerd\.task\.v2\.Nope"
        ):
            raw.call("containerd.task.v2.Nope", "State", b"", timeout=5, namespace=NAMESPACE)
        assert task.connect_info(TASK_ID).task_pid == 0  # still usable after errors

        task.shutdown(TASK_ID)

    assert helpers.wait_gone(shim.pid, shim.create_time, timeout=10), "shim still alive"
    assert _wait_for(lambda: not shim.socket.exists()), f"{shim.socket} not removed"
    assert shim.topics() == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]


@pytest.mark.real
def test_wait_ignores_shim_deadline_we_enforce_ours(shim: RealShim) -> None:
    with shim.client() as task:
        task.create(
            TASK_ID, str(shim.bundle), options=runc_options_any(root=str(shim.node.runc_root))
        )
        task.start(TASK_ID)
        start = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded):
            task.wait(TASK_ID, timeout=0.5)
        assert time.monotonic() - start < 2.0
        assert task.ttrpc.closed
        with pytest.raises(errors.ShimClosed):
            task.state(TASK_ID)
    # A fresh connection works; clean up through the API.
    with shim.client() as task:
        assert task.state(TASK_ID).status == "running"
        with pytest.raises(errors.Unknown, match="cannot delete a running process"):
            task.delete(TASK_ID)
        with pytest.raises(errors.NotFound, match="process does not exist nope"):
            task.state(TASK_ID, exec_id="nope")
        task.kill(TASK_ID, signal.SIGKILL, all_processes=True)
        assert task.wait(TASK_ID).exit_status == 137
        task.delete(TASK_ID)
        task.shutdown(TASK_ID)
    assert helpers.wait_gone(shim.pid, shim.create_time, timeout=10)


@pytest.mark.real
def test_task_api_v3_is_not_served_by_a_v2_shim(shim: RealShim) -> None:
    with shim.client(api_version=3) as task:
        assert task.service == "containerd.task.v3.Task"
        with pytest.raises(errors.NotImplementedByShim, match=r"containerd\.task\.v3\.Task"):
            task.connect_info(TASK_ID)
    with shim.client() as task:
        task.shutdown(TASK_ID)  # no task: the shim exits
    assert helpers.wait_gone(shim.pid, shim.create_time, timeout=10)
    assert _wait_for(lambda: not shim.socket.exists())
