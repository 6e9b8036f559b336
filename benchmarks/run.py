"""shimctl benchmarks: whole-process timings and memory on real shims, side by side with
containerd 1.6 on the same state. Run by `make bench`; writes benchmarks/results.md.

Scenarios are built on a private root/state/address with the real containerd-shim-runc-v2
(benchmarks/harness.py); every process started here is stopped by PID (verified start time)
at the end. The scale, meta.db and CRI-shaped rows are in benchmarks/scale.py. Targets are
reported as ratios, never asserted in tests. Rows: --rows; a shorter run: --quick.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import scale
from harness import (
    ROOT,
    SHIM,
    Node,
    Row,
    containerd_startup_ms,
    private_node,
    run_ok,
    timed,
)

from shimctl.node.spec import default_spec, encode_spec
from shimctl.shim.task import Mount, TaskClient, runc_options_any

# -- scenarios --------------------------------------------------------------------------------


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


NOTES_MARK = "<!-- notes: kept by run.py -->"


def write_results(rows: list[Row], extra: list[str], path: Path) -> str:
    """The table and the run's notes; a hand-written part after NOTES_MARK is kept."""
    lines = [
        "| measure | shimctl | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ours = f"{r.shimctl:.1f} {r.unit}" if r.shimctl is not None else "-"
        base = f"{r.baseline:.1f} {r.unit} ({r.baseline_name})" if r.baseline else "-"
        lines.append(f"| {r.name} | {ours} | {base} | {r.ratio()} | {r.target} |")
    table = "\n".join(lines)
    kept = ""
    with contextlib.suppress(OSError):
        old = path.read_text()
        if NOTES_MARK in old:
            kept = "\n" + old[old.index(NOTES_MARK) :]
    path.write_text(
        "# shimctl benchmark results\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores by `make bench` "
        "(medians; containerd 1.6 from Debian, real containerd-shim-runc-v2).\n\n"
        f"{table}\n\n" + "\n".join(f"- {e}" for e in extra) + "\n" + kept
    )
    return table


ROWS = ("start", "scale", "hung", "dead", "memory", "metadb", "cri")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", type=int, default=200, help="live shims, smaller scale size")
    parser.add_argument("--scale", type=int, default=800, help="live shims, larger scale size")
    parser.add_argument("--hung", type=int, default=20)
    parser.add_argument("--dead", type=int, default=20)
    parser.add_argument("--bundles", type=int, default=1000)
    parser.add_argument("--records", type=int, default=1000, help="meta.db container records")
    parser.add_argument("--pods", type=int, default=100, help="CRI-shaped pods (3 bundles each)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--rows", default=",".join(ROWS), help=f"rows to run, comma-separated ({','.join(ROWS)})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 runs, 100 and 400 live shims, 50 pods"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.live, args.scale, args.pods = 3, 100, 400, 50
    chosen = [r for r in args.rows.split(",") if r]
    if unknown := set(chosen) - set(ROWS):
        raise SystemExit(f"unknown rows: {', '.join(sorted(unknown))} (known: {', '.join(ROWS)})")
    if os.geteuid() != 0:
        raise SystemExit("benchmarks need root (shims and runc do)")
    # Time shimctl as installed (pip compiles bytecode), not recompiling itself each run.
    import compileall

    compileall.compile_dir(str(ROOT / "shimctl"), quiet=1)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    rows: list[Row] = []
    extra: list[str] = []
    if "start" in chosen:
        start_row, python, bare = bench_start(args.runs)
        rows.append(start_row)
        extra.append(
            f"start baseline parts: python3 -I -c pass {python:.1f} ms, "
            f"bare shim start {bare:.1f} ms"
        )
    if "scale" in chosen:
        scale_rows, scale_extra = scale.bench_scale([args.live, args.scale], args.runs)
        rows += scale_rows
        extra += scale_extra
    if "hung" in chosen:
        rows.append(bench_hung(args.hung, 2.0))
    if "dead" in chosen:
        rows.append(bench_dead(args.dead, max(1, args.runs // 2)))
    if "memory" in chosen:
        rows.append(bench_memory(args.bundles))
        small = bench_memory(args.bundles // 10)
        growth = (rows[-1].shimctl or 0) - (small.shimctl or 0)
        per_bundle = growth * 1024 * 1024 / max(1, args.bundles * 9 // 10)
        extra.append(
            f"gc peak RSS at {args.bundles // 10} bundles: {small.shimctl:.1f} MB; growth to "
            f"{args.bundles}: {growth:.1f} MB ({per_bundle:.0f} bytes a bundle)"
        )
    if "metadb" in chosen:
        rows.append(scale.bench_metadb(args.records, args.runs))
    if "cri" in chosen:
        cri_rows, cri_extra = scale.bench_cri(args.pods, args.runs)
        rows += cri_rows
        extra += cri_extra
    extra.append(
        f"{args.runs} runs a row (medians; shimctl and containerd runs interleaved); load "
        f"average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{time.monotonic() - began:.0f} s in all"
    )
    table = write_results(rows, extra, args.out)
    print(table)
    for e in extra:
        print(e)


if __name__ == "__main__":
    main()
