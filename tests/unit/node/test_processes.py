"""The one predicate "this process is the shim of this bundle" (shimctl.node.processes):
argv, cwd, namespace, address, sandbox sharing, and PID reuse by start time. The processes
are plain Python sleepers started with a shim's flags, stopped by PID; no root needed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shimctl.errors import Unsafe
from shimctl.node import processes
from shimctl.node.processes import ProcessRef, ShimProcess

NS = "default"
ADDRESS = "/run/containerd/containerd.sock"
SLEEP = "import time; time.sleep(60)"
Spawn = Callable[..., "subprocess.Popen[bytes]"]


def shim(id: str, cwd: str | None, *, ns: str = NS, address: str = ADDRESS) -> ShimProcess:
    argv = ("shim", "-namespace", ns, "-id", id, "-address", address)
    return ShimProcess(ProcessRef(1234, 5.0), ns, id, address, cwd, argv)


STATE = Path("/state/io.containerd.runtime.v2.task")
BUNDLE = STATE / NS / "c1"


@pytest.mark.parametrize(
    ("candidate", "own", "shared"),
    [
        (shim("c1", str(BUNDLE)), True, True),
        (shim("c1", None), True, True),  # cwd unreadable: its id still names the bundle
        (shim("c1", "/elsewhere"), True, True),  # by id
        (shim("other", str(BUNDLE)), True, True),  # by cwd (a shim started in this bundle)
        (shim("pod", str(STATE / NS / "pod")), False, True),  # a pod's shared shim
        (shim("pod", str(STATE / "k8s.io" / "pod")), False, False),  # another namespace's dir
        (shim("pod", None), False, False),
        (shim("c1", str(BUNDLE), ns="k8s.io"), False, False),
        (shim("c1", str(BUNDLE), address="/run/other/containerd.sock"), False, False),
        (shim("c1-x", str(STATE / NS / "c1-x")), False, True),
    ],
)
def test_is_shim_of(candidate: ShimProcess, own: bool, shared: bool) -> None:
    def check(shared: bool) -> bool:
        return processes.is_shim_of(
            candidate, namespace=NS, address=ADDRESS, bundle=BUNDLE, shared=shared
        )

    assert check(False) is own
    assert check(True) is shared
    why = processes.shim_mismatch(candidate, namespace=NS, address=ADDRESS, bundle=BUNDLE)
    assert (why is None) is own
    if why is not None:
        assert str(candidate.ref.pid) in why


def test_mismatch_says_why() -> None:
    other_ns = shim("c1", str(BUNDLE), ns="k8s.io")
    why = processes.shim_mismatch(other_ns, namespace=NS, address=ADDRESS, bundle=BUNDLE)
    assert why == (
        f"process 1234 is a shim of namespace 'k8s.io' at {ADDRESS!r}, "
        f"not of 'default' at {ADDRESS!r}"
    )
    stranger = shim("x", "/x")
    why = processes.shim_mismatch(stranger, namespace=NS, address=ADDRESS, bundle=BUNDLE)
    assert why == "process 1234 is the shim of 'x', not of 'c1'"


# -- live processes ----------------------------------------------------------------------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    started: list[subprocess.Popen[bytes]] = []

    def run(*flags: str, cwd: Path) -> subprocess.Popen[bytes]:
        cwd.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", SLEEP, *flags], cwd=cwd)
        started.append(proc)
        return proc

    yield run
    for proc in started:  # our own children, by PID
        proc.kill()
        proc.wait()


def _flags(id: str, address: str, *extra: str) -> tuple[str, ...]:
    return ("-namespace", NS, "-id", id, "-address", address, *extra)


def _wait_listed(address: str, pid: int) -> ShimProcess:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [s for s in processes.find_shims(address) if s.ref.pid == pid]
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"process {pid} was never found")


def test_find_shims_reads_argv_and_cwd(spawn: Spawn, tmp_path: Path) -> None:
    address = f"{tmp_path}/containerd.sock"
    bundle = tmp_path / "state" / NS / "c1"
    proc = spawn(*_flags("c1", address), cwd=bundle)
    verb = spawn(*_flags("c2", address, "delete"), cwd=bundle)
    equals = spawn(f"-namespace={NS}", "-id=c3", f"-address={address}", cwd=bundle)
    other = spawn(*_flags("c4", address + ".other"), cwd=bundle)
    found = _wait_listed(address, proc.pid)
    assert (found.namespace, found.id, found.address, found.cwd) == (NS, "c1", address, str(bundle))
    assert found.ref == processes.ref_of(proc.pid)
    assert _wait_listed(address, equals.pid).id == "c3"
    pids = {s.ref.pid for s in processes.find_shims(address)}
    assert verb.pid not in pids  # a `delete` verb process is not a shim server
    assert other.pid not in pids  # another containerd's shim


def test_verify_shim(spawn: Spawn, tmp_path: Path) -> None:
    address = f"{tmp_path}/containerd.sock"
    ns_dir = tmp_path / "state" / NS
    pod = spawn(*_flags("pod", address), cwd=ns_dir / "pod")
    live = _wait_listed(address, pod.pid)

    assert processes.verify_shim(pod.pid, namespace=NS, address=address, bundle=ns_dir / "pod")
    # The pod's shim answers for its member bundles, but is never taken for their own shim.
    member = ns_dir / "ctr"
    assert processes.verify_shim(pod.pid, namespace=NS, address=address, bundle=member)
    with pytest.raises(Unsafe, match="is the shim of 'pod', not of 'ctr'"):
        processes.verify_shim(pod.pid, namespace=NS, address=address, bundle=member, shared=False)
    with pytest.raises(Unsafe, match="namespace"):
        processes.verify_shim(pod.pid, namespace="k8s.io", address=address, bundle=ns_dir / "pod")
    # Scan results are trusted as they are: a made-up entry decides.
    fake = {pod.pid: live._replace(id="elsewhere", cwd="/elsewhere")}
    with pytest.raises(Unsafe, match="not of 'pod'"):
        processes.verify_shim(
            pod.pid, namespace=NS, address=address, bundle=ns_dir / "x" / "pod", known=fake
        )


def test_a_reused_pid_is_another_process(spawn: Spawn, tmp_path: Path) -> None:
    address = f"{tmp_path}/containerd.sock"
    bundle = tmp_path / "state" / NS / "c1"
    proc = spawn(*_flags("c1", address), cwd=bundle)
    live = _wait_listed(address, proc.pid)
    earlier = ProcessRef(proc.pid, live.ref.create_time - 100.0)  # what an older scan saw

    assert processes.is_alive(live.ref) and processes.still_alive(live.ref)
    assert not processes.is_alive(earlier) and not processes.still_alive(earlier)

    def verify(seen: ProcessRef) -> ShimProcess:
        return processes.verify_shim(
            proc.pid, namespace=NS, address=address, bundle=bundle, seen=seen
        )

    assert verify(live.ref).ref == live.ref
    with pytest.raises(Unsafe, match="PID was reused"):
        verify(earlier)
    # Signals go only to the process seen: the earlier one is "already gone".
    assert processes.send_signal(earlier, 9) is False
    assert proc.poll() is None


def test_a_gone_or_zombie_process_is_no_shim(spawn: Spawn, tmp_path: Path) -> None:
    address = f"{tmp_path}/containerd.sock"
    bundle = tmp_path / "state" / NS / "c1"
    proc = spawn(*_flags("c1", address), cwd=bundle)
    live = _wait_listed(address, proc.pid)
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # a zombie until reaped
    assert not processes.still_alive(live.ref)
    assert proc.pid not in {s.ref.pid for s in processes.find_shims(address)}
    with pytest.raises(Unsafe, match="not a live shim server process"):
        processes.verify_shim(proc.pid, namespace=NS, address=address, bundle=bundle)


def test_wall_clock_start_of_a_process_is_now_minus_its_age() -> None:
    import subprocess
    import time

    from shimctl.node.processes import ProcessRef, ref_of, started_at_wall_clock

    before = time.time()
    child = subprocess.Popen(["sleep", "30"])
    try:
        ref = ref_of(child.pid)
        assert ref is not None
        started = started_at_wall_clock(ref)
        assert started is not None
        # Within the boot clock's tick of when it was spawned, whatever btime says.
        assert before - 0.05 <= started <= time.time() + 0.05
        assert started_at_wall_clock(ProcessRef(child.pid, ref.create_time + 5)) is None
    finally:
        child.kill()
        child.wait()
    assert started_at_wall_clock(ref) is None
