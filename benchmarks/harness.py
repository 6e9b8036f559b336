"""The benchmarks' harness: a private containerd root/state/address with the real
containerd-shim-runc-v2, whole-process timings, and containerd 1.6 on the same state.

Every process started here is stopped by PID (verified start time) at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shimctl.ops.start import start  # noqa: E402
from shimctl.settings import Settings, Timeouts  # noqa: E402

SHIM = "/usr/bin/containerd-shim-runc-v2"
CONTAINERD = "/usr/bin/containerd"


@dataclass
class Row:
    name: str
    shimctl: float | None
    baseline: float | None
    baseline_name: str
    target: str
    unit: str = "ms"

    def ratio(self) -> str:
        if self.shimctl is None or not self.baseline:
            return "-"
        return f"{self.shimctl / self.baseline:.2f}"


class Node:
    """A private containerd root/state/address, and everything started on it."""

    def __init__(self, base: Path, state: Path) -> None:
        self.base = base
        self.root = base / "root"
        # containerd's state lives on a tmpfs (/run) on real nodes; keep it there here too.
        self.state = state
        self.address = str(base / "c.sock")
        self.runc_root = base / "runc"
        self.refs: list[tuple[int, float]] = []
        # `shimctl` refuses a root that does not exist (a mistyped --root), as on a real node.
        self.root.mkdir(exist_ok=True)
        self.settings = Settings(
            root=self.root,
            state=self.state,
            address=self.address,
            ttrpc_address=self.address + ".ttrpc",
            publish_binary=CONTAINERD,
            timeouts=Timeouts(load=1.0),
        )

    def cli(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "shimctl",
            "--config",
            str(self.base / "none.toml"),
            "--root",
            str(self.root),
            "--state",
            str(self.state),
            "--address",
            self.address,
            *args,
        ]

    def start_shims(
        self, prefix: str, count: int, spec: bytes | None = None, *, first: int = 0
    ) -> list[int]:
        """`count` shims (`shimctl start`), ids prefix + first, first + 1, ..."""
        pids = []
        for i in range(first, first + count):
            result = start(self.settings, f"{prefix}{i}", spec=spec)
            assert result.shim_pid
            self.track(result.shim_pid)
            pids.append(result.shim_pid)
        return pids

    def track(self, pid: int) -> None:
        self.refs.append((pid, psutil.Process(pid).create_time()))

    def stop_all(self) -> None:
        for pid, created in self.refs:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                if abs(psutil.Process(pid).create_time() - created) < 1e-3:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
        # Shims started by containerd or left by a scenario: found by this node's address.
        from shimctl.node import processes

        for shim in processes.find_shims(self.address):
            processes.send_signal(shim.ref, signal.SIGKILL)
        for runc_state in self.runc_root.glob("*/*"):
            subprocess.run(
                ["runc", "--root", str(runc_state.parent), "delete", "--force", runc_state.name],
                capture_output=True,
                check=False,
            )
        for bundle in self.settings.task_state.glob("*/*"):
            with contextlib.suppress(OSError):
                address = (bundle / "address").read_text().removeprefix("unix://")
                if Path(address).parent == Path("/run/containerd/s"):
                    os.unlink(address)
        for top in (self.base, self.state):
            for point in sorted(_mounts_under(top), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], check=False)


def _mounts_under(base: Path) -> list[str]:
    from shimctl.node.mounts import mount_points_under

    return mount_points_under(base)


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `fn` in ms."""
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def run_ok(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[-3:]} failed ({proc.returncode}): {proc.stderr[-2000:]}")


@contextlib.contextmanager
def private_node(name: str) -> Iterator[Node]:
    with (
        tempfile.TemporaryDirectory(prefix=f"shimctl-bench-{name}-") as tmp,
        tempfile.TemporaryDirectory(prefix=f"shimctl-bench-{name}-", dir="/run") as state,
    ):
        node = Node(Path(tmp), Path(state))
        try:
            yield node
        finally:
            node.stop_all()


# -- containerd side by side -----------------------------------------------------------------


class Startup(NamedTuple):
    ms: float  # exec until its gRPC socket accepts
    cpu_ms: float  # the user + system CPU containerd used by then


def containerd_startup_ms(node: Node) -> float:
    """Exec containerd over the node's state; time until its gRPC socket accepts (the runtime
    plugin has loaded every existing shim by then); stop it again by PID."""
    with containerd_up(node) as startup:
        return startup.ms


def _cpu_ms(pid: int) -> float:
    """utime + stime of a live process (proc(5) stat fields 14 and 15), in ms."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def containerd_up(node: Node) -> Iterator[Startup]:
    """containerd 1.6 started over the node's state: yields its startup time and CPU, and
    runs until the block ends (then SIGTERM, by its PID)."""
    from tests.support.containerd import config_toml
    from tests.support.helpers import Node as TestNode

    test_node = TestNode(
        base=node.base,
        root=node.root,
        state=node.state,
        address=node.address,
        ttrpc_address=node.address + ".ttrpc",
    )
    config = node.base / "containerd.toml"
    config.write_text(config_toml(test_node))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(node.address)
    log = (node.base / "containerd.log").open("ab")
    t = time.perf_counter()
    proc = subprocess.Popen([CONTAINERD, "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(node.address)
                    break
                except OSError:
                    time.sleep(0.002)
        elapsed = (time.perf_counter() - t) * 1000
        yield Startup(elapsed, _cpu_ms(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
