"""Helpers for the safety tests (tests/test_safety_*.py): bundles made by hand, fake shim
processes with a shim server's argv, snapshots of what must not change, and CLI runs that
must end cleanly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil

from shimctl.errors import ExitCode
from shimctl.node.spec import default_spec
from tests.support.findings import by_key
from tests.support.helpers import (
    Node,
    find_address_processes,
    remove_stale_socket,
    shim_socket_path,
    wait_gone,
)

REPO = Path(__file__).resolve().parents[2]
FAKESHIM = Path(__file__).with_name("fakeshim.py")
REAL_SHIM = shutil.which("containerd-shim-runc-v2") or "/usr/bin/containerd-shim-runc-v2"


# -- running shimctl -------------------------------------------------------------------------


def cli(
    node: Node,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    prefix: Iterable[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m shimctl <node options> *args`, with extra environment, cwd or an argv
    prefix (e.g. setpriv). The tree's shimctl is imported whatever the cwd."""
    full_env = node.env()
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    argv = [*prefix, sys.executable, "-m", "shimctl", *node.cli_args(), *args]
    return subprocess.run(
        argv,
        env=full_env,
        cwd=cwd or REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_exit(proc: subprocess.CompletedProcess[str], *codes: int) -> None:
    """The run ended with one of `codes` and without a Python traceback."""
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, out
    assert proc.returncode in codes, out
    if proc.returncode not in (ExitCode.OK, ExitCode.ACTIONS_FAILED):
        assert proc.stderr.startswith("shimctl: error: "), out


def findings(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], dict[str, object]]:
    """(namespace, id) -> finding of a --json list/gc/load run."""
    return dict(by_key(proc))


# -- bundles made by hand --------------------------------------------------------------------


def make_bundle(
    node: Node,
    task_id: str,
    *,
    namespace: str = "default",
    address: str | bytes | None = None,
    runtime: str | bytes | None = REAL_SHIM,
    log_fifo: bool = True,
    age: float = 0.0,
) -> Path:
    """A bundle laid out as `shimctl start` (and containerd) leaves it, but with no shim:
    config.json, rootfs/, the work link, the log fifo, and the given `address` and
    `shim-binary-path` contents (None: no such file). `age` backdates the bundle's mtimes."""
    bundle = node.task_state / namespace / task_id
    work = node.task_root / namespace / task_id
    for d in (node.task_state, node.task_root):
        d.mkdir(mode=0o711, parents=True, exist_ok=True)
    bundle.parent.mkdir(mode=0o711, exist_ok=True)
    work.parent.mkdir(mode=0o711, exist_ok=True)
    bundle.mkdir(mode=0o700)
    (bundle / "rootfs").mkdir(mode=0o711)
    work.mkdir(mode=0o711)
    (bundle / "work").symlink_to(work)
    (bundle / "config.json").write_text(json.dumps(default_spec()))
    if log_fifo:
        os.mkfifo(bundle / "log", 0o700)
    for name, content in (("address", address), ("shim-binary-path", runtime)):
        if content is not None:
            data = content.encode() if isinstance(content, str) else content
            (bundle / name).write_bytes(data)
    if age:
        backdate(bundle, age)
    return bundle


def backdate(path: Path, seconds: float) -> None:
    """Move the mtime of `path` and of the files directly in it `seconds` into the past."""
    for p in [path, *(path.iterdir() if path.is_dir() and not path.is_symlink() else [])]:
        st = os.lstat(p)
        os.utime(p, (st.st_atime, st.st_mtime - seconds), follow_symlinks=False)


def derived_socket(node: Node, task_id: str, namespace: str = "default") -> Path:
    """Where a runc shim of this bundle would listen (/run/containerd/s/<hash>)."""
    return shim_socket_path(node.address, namespace, task_id)


def precious_dir(base: Path) -> Path:
    """A directory of files that must survive every test untouched."""
    d = base / "precious"
    d.mkdir(exist_ok=True)
    (d / "keep.txt").write_text("do not delete\n")
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "deep.txt").write_text("me neither\n")
    return d


# -- processes -------------------------------------------------------------------------------


@dataclass
class FakeProc:
    popen: subprocess.Popen[bytes]
    pid: int
    create_time: float
    child: int  # pid of a child in its process group, 0 if none
    socket: str | None

    def alive(self) -> bool:
        from tests.support.helpers import pid_alive

        return pid_alive(self.pid, self.create_time)


class Fakes:
    """Fake shim processes and look-alikes a test started; all stopped by PID at its end."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.procs: list[FakeProc] = []
        self.extra: list[tuple[int, float]] = []  # other processes to stop (pid, create_time)

    def spawn(
        self,
        task_id: str,
        *,
        namespace: str = "default",
        address: str | None = None,
        socket: str | None = None,
        cwd: Path | None = None,
        faults: dict[str, str] | None = None,
        pid: int | None = None,
        task_pid: int = 0,
        child: bool = False,
        ignore_term: bool = False,
        marker_dir: Path | None = None,
        sleep: bool = False,
        group: int | None = 0,
    ) -> FakeProc:
        """Start `fakeshim.py -namespace NS -id ID -address ADDR ...` (ADDR defaults to the
        node's containerd address) with `cwd` (default: the bundle) as its working dir.
        Unless `sleep`, it listens on `socket` (default: the derived shim socket). `group`: 0
        leads its own process group (as a real shim), N joins group N, None inherits ours."""
        argv = [
            sys.executable,
            str(FAKESHIM),
            "-namespace",
            namespace,
            "-id",
            task_id,
            "-address",
            address or self.node.address,
        ]
        sock = None
        if not sleep:
            sock = socket or str(derived_socket(self.node, task_id, namespace))
            argv += ["-socket", sock]
        for method, behaviour in (faults or {}).items():
            argv += ["-fault", f"{method}={behaviour}"]
        if pid is not None:
            argv += ["-pid", str(pid)]
        if task_pid:
            argv += ["-task-pid", str(task_pid)]
        if child:
            argv.append("-child")
        if ignore_term:
            argv.append("-ignore-term")
        if marker_dir is not None:
            argv += ["-marker-dir", str(marker_dir)]
        if sleep:
            argv.append("-sleep")
        workdir = cwd or (self.node.task_state / namespace / task_id)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        popen = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            process_group=group,
        )
        assert popen.stdout is not None
        line = popen.stdout.readline().decode().split()
        assert line and line[0] == "ready", f"fake shim did not start: {line}"
        proc = FakeProc(
            popen,
            popen.pid,
            psutil.Process(popen.pid).create_time(),
            int(line[2]),
            sock,
        )
        self.procs.append(proc)
        if proc.child:
            self.extra.append((proc.child, psutil.Process(proc.child).create_time()))
        return proc

    def track(self, pid: int) -> None:
        self.extra.append((pid, psutil.Process(pid).create_time()))

    def stop_all(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.kill()
        for pid, created in self.extra:
            _kill(pid, created)
        for p in self.procs:
            p.popen.wait(timeout=10)
            if p.popen.stdout is not None:
                p.popen.stdout.close()
            if p.socket and not p.socket.startswith("@"):
                remove_stale_socket(Path(p.socket))
        for pid, created in self.extra:
            wait_gone(pid, created, timeout=10)


def _kill(pid: int, created: float) -> None:
    try:
        if abs(psutil.Process(pid).create_time() - created) > 1e-3:
            return
        os.kill(pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def node_processes(node: Node) -> list[int]:
    """PIDs of live processes started with `-address <node.address>` (shims, fakes)."""
    return sorted(rec.pid for rec in find_address_processes(node.address))


def signals_of(marker_dir: Path, task_id: str) -> list[int]:
    """Signals a `-sleep` look-alike caught (see fakeshim.py)."""
    log = marker_dir / f"{task_id}.signals"
    return [int(x) for x in log.read_text().split()] if log.exists() else []
