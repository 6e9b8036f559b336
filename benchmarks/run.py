"""shimctl benchmarks: whole-process timings and memory on real shims, side by side with
containerd 1.6 on the same state. Run by `make bench`; writes benchmarks/results.md.

Scenarios are built on a private root/state/address with the real containerd-shim-runc-v2;
every process started here is stopped by PID (verified start time) at the end.
Targets (issue 7) are reported as ratios, never asserted in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
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

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shimctl.node.spec import default_spec, encode_spec  # noqa: E402
from shimctl.ops.start import start  # noqa: E402
from shimctl.settings import Settings, Timeouts  # noqa: E402
from shimctl.shim.task import Mount, TaskClient, runc_options_any  # noqa: E402

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

    def start_shims(self, prefix: str, count: int, spec: bytes | None = None) -> list[int]:
        pids = []
        for i in range(count):
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


def containerd_startup_ms(node: Node) -> float:
    """Exec containerd over the node's state; time until its gRPC socket accepts (the runtime
    plugin has loaded every existing shim by then); stop it again by PID."""
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
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    return elapsed


# -- scenarios --------------------------------------------------------------------------------


def bench_list_live(count: int, runs: int) -> Row:
    with private_node("live") as node:
        node.start_shims("live", count)
        ours = timed(lambda: run_ok(node.cli("list")), runs)
        theirs = statistics.median(containerd_startup_ms(node) for _ in range(runs))
    return Row(
        f"list, {count} live idle shims (whole process)",
        ours,
        theirs,
        "containerd 1.6 startup on the same state",
        "<= 1.0x",
    )


def bench_hung(count: int, timeout: float) -> Row:
    with private_node("hung") as node:
        for pid in node.start_shims("hung", count):
            os.kill(pid, signal.SIGSTOP)
        ours = timed(lambda: run_ok(node.cli("--timeout", str(timeout), "list")), 1)
    return Row(
        f"list, {count} hung (SIGSTOPped) shims, --timeout {timeout:g}s",
        ours,
        timeout * 1000,
        "one timeout",
        "< 1.2x",
    )


def _dead_containers(node: Node, count: int) -> None:
    """`count` real busybox containers whose shims were SIGKILLed (their runc state and
    processes live on, as after a crash)."""
    rootfs = node.base / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    if not (rootfs / "bin" / "busybox").exists():
        subprocess.run(["cp", "/bin/busybox", str(rootfs / "bin" / "busybox")], check=True)
        for applet in ("sh", "sleep"):
            os.symlink("busybox", rootfs / "bin" / applet)
        for d in ("proc", "dev", "sys"):
            (rootfs / d).mkdir()
    spec = encode_spec(default_spec(["/bin/sleep", "600"]))
    prefix = f"dead{int(time.time() * 1000) % 100000}x"
    pids = node.start_shims(prefix, count, spec=spec)
    for i, pid in enumerate(pids):
        task_id = f"{prefix}{i}"
        bundle = node.settings.task_state / "default" / task_id
        with TaskClient.connect((bundle / "address").read_text(), "default", timeout=10) as client:
            client.create(
                task_id,
                str(bundle),
                rootfs=[Mount("bind", str(rootfs), options=("rbind", "ro"))],
                options=runc_options_any(root=str(node.runc_root)),
            )
            client.start(task_id)
        os.kill(pid, signal.SIGKILL)


def bench_dead(count: int, runs: int) -> Row:
    ours, theirs = [], []
    for _ in range(runs):
        with private_node("dead") as node:
            _dead_containers(node, count)
            ours.append(timed(lambda n=node: run_ok(n.cli("gc", "--min-age", "0", "-q")), 1))
        with private_node("dead") as node:
            _dead_containers(node, count)
            theirs.append(containerd_startup_ms(node))
    return Row(
        f"gc --min-age 0, {count} dead real containers",
        statistics.median(ours),
        statistics.median(theirs),
        "containerd 1.6 load phase (startup) on the same state",
        "<= 0.5x",
    )


def bench_start(runs: int) -> tuple[Row, float, float]:
    with private_node("start") as node:
        python = timed(lambda: run_ok([sys.executable, "-I", "-c", "pass"]), runs)
        bare = _bare_shim_start_ms(node, runs)
        counter = iter(range(10**6))

        def one() -> None:
            run_ok(node.cli("start", f"s{next(counter)}"))

        ours = timed(one, runs)
        for shim_dir in (node.settings.task_state / "default").glob("s*"):
            with (
                contextlib.suppress(Exception),
                TaskClient.connect(
                    (shim_dir / "address").read_text(), "default", timeout=2
                ) as client,
            ):
                node.track(client.connect_info(shim_dir.name).shim_pid)
    return (
        Row(
            "start, whole process",
            ours,
            python + bare,
            "python3 -I -c pass + bare shim start",
            "<= 2.5x",
        ),
        python,
        bare,
    )


def _bare_shim_start_ms(node: Node, runs: int) -> float:
    """exec→exit of `containerd-shim-runc-v2 start` in a ready bundle (fifo held open)."""
    samples = []
    for i in range(runs):
        bundle = node.base / "bare" / f"b{i}"
        bundle.mkdir(parents=True)
        (bundle / "config.json").write_bytes(encode_spec(default_spec()))
        os.mkfifo(bundle / "log", 0o700)
        fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)
        argv = [SHIM, "-namespace", "bench", "-address", node.address, "-id", f"b{i}", "start"]
        t = time.perf_counter()
        out = subprocess.run(argv, cwd=bundle, stdin=subprocess.DEVNULL, capture_output=True)
        samples.append((time.perf_counter() - t) * 1000)
        address = out.stdout.decode().strip()
        with TaskClient.connect(address, "bench", timeout=5) as client:
            client.shutdown(f"b{i}")
        os.close(fd)
    return statistics.median(samples)


def bench_memory(count: int) -> Row:
    with private_node("mem") as node:
        task_state = node.settings.task_state / "default"
        task_state.mkdir(parents=True)
        for i in range(count):
            bundle = task_state / f"m{i}"
            (bundle / "rootfs").mkdir(parents=True)
            (bundle / "address").write_text(f"unix:///run/containerd/s/nonexistent-bench-{i}")
            (bundle / "shim-binary-path").write_text(SHIM)
            (bundle / "config.json").write_text("{}")
        rss = _peak_rss_kib(node.cli("gc", "--min-age", "0", "-q"))
    return Row(f"gc peak RSS, {count} dead bundles", rss / 1024, 80.0, "target", "< 80 MB", "MB")


def _peak_rss_kib(argv: list[str]) -> float:
    code = (
        "import resource, subprocess, sys;"
        "subprocess.run(sys.argv[1:], capture_output=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    return float(out.stdout.strip())


def write_results(rows: list[Row], extra: list[str], path: Path) -> str:
    lines = [
        "| measure | shimctl | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ours = f"{r.shimctl:.1f} {r.unit}" if r.shimctl is not None else "-"
        base = f"{r.baseline:.1f} {r.unit} ({r.baseline_name})" if r.baseline else "-"
        lines.append(f"| {r.name} | {ours} | {base} | {r.ratio()} | {r.target} |")
    table = "\n".join(lines)
    path.write_text(
        "# shimctl benchmark results\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores by `make bench` "
        "(medians; containerd 1.6 from Debian, real containerd-shim-runc-v2).\n\n"
        f"{table}\n\n" + "\n".join(f"- {e}" for e in extra) + "\n"
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", type=int, default=200)
    parser.add_argument("--scale", type=int, default=800, help="live shims of the scale row")
    parser.add_argument("--hung", type=int, default=20)
    parser.add_argument("--dead", type=int, default=20)
    parser.add_argument("--bundles", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmarks need root (shims and runc do)")
    # Time shimctl as installed (pip compiles bytecode), not recompiling itself each run.
    import compileall

    compileall.compile_dir(str(ROOT / "shimctl"), quiet=1)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    start_row, python, bare = bench_start(args.runs)
    rows.append(start_row)
    rows.append(bench_list_live(args.live, args.runs))
    rows.append(bench_list_live(args.scale, max(1, args.runs // 2)))
    rows.append(bench_hung(args.hung, 2.0))
    rows.append(bench_dead(args.dead, max(1, args.runs // 2)))
    rows.append(bench_memory(args.bundles))
    small = bench_memory(args.bundles // 10)
    growth = (rows[-1].shimctl or 0) - (small.shimctl or 0)
    per_bundle = growth * 1024 * 1024 / max(1, args.bundles * 9 // 10)
    extra = [
        f"start baseline parts: python3 -I -c pass {python:.1f} ms, bare shim start {bare:.1f} ms",
        f"gc peak RSS at {args.bundles // 10} bundles: {small.shimctl:.1f} MB; growth to "
        f"{args.bundles}: {growth:.1f} MB ({per_bundle:.0f} bytes a bundle)",
    ]
    table = write_results(rows, extra, args.out)
    print(table)
    for e in extra:
        print(e)


if __name__ == "__main__":
    main()
