"""A private, real containerd for one test: its own config.toml, root, state and addresses.

:func:`running_containerd` starts ``containerd --config <node.base>/containerd.toml`` over the
test's :class:`~tests.support.helpers.Node` (``root``/``state`` = the node's, ``[grpc] address`` =
``node.address``, ``[ttrpc] address`` = ``node.ttrpc_address``, CRI and the plugins that need
what a test machine lacks disabled, debug logging to ``<node.base>/containerd.log``). Every shim
it starts gets ``-address <node.address>``, so the node's safety net covers them too.

containerd is stopped by its PID (verified with its create time): SIGTERM, then SIGKILL.
At the end every task and container record of every namespace is removed through ``ctr``
(containerd is started again for that if a test left it stopped), then containerd is stopped.

Container ids must be unique on the machine (runc keeps containerd's containers in the shared
``/run/containerd/runc/<ns>``, and their cgroups are ``/<ns>/<id>``): use :meth:`Containerd.ids`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from shimctl.shim.bootstrap import Bootstrap, parse_bootstrap
from shimctl.shim.task import TaskClient
from tests.support.helpers import SHIM_BINARY, Node, find_address_processes, shim_socket_path
from tests.support.tasks import busybox_rootfs

CTR_BINARY = "ctr"
#: How long containerd may take to answer ``ctr version`` after it was started.
READY_TIMEOUT = 20.0
#: SIGTERM grace before SIGKILL.
STOP_GRACE = 10.0
#: Longest unix socket path (sun_path is 108 bytes, with the NUL).
MAX_SOCKET_PATH = 107

#: Plugins a private test containerd does without: CRI (slow, needs CNI), the ``opt`` plugin
#: (writes /opt/containerd on the host), and snapshotters that only fail or probe here.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)


class ContainerdError(AssertionError):
    """containerd or ctr did not do what the test needed."""


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON escaping is valid TOML for the characters paths contain)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_toml(node: Node) -> str:
    """containerd's config.toml (version 2) for ``node``."""
    for address in (node.address, node.ttrpc_address):
        if len(address.encode()) > MAX_SOCKET_PATH:
            raise ContainerdError(f"socket path too long for a unix socket: {address}")
    disabled = ", ".join(_toml_string(p) for p in DISABLED_PLUGINS)
    return "\n".join(
        [
            "version = 2",
            f"root = {_toml_string(str(node.root))}",
            f"state = {_toml_string(str(node.state))}",
            f"disabled_plugins = [{disabled}]",
            "",
            "[grpc]",
            f"  address = {_toml_string(node.address)}",
            "",
            "[ttrpc]",
            f"  address = {_toml_string(node.ttrpc_address)}",
            "",
            "[debug]",
            '  level = "debug"',
            "",
        ]
    )


def tool_env(path_prefix: Sequence[str] = ()) -> dict[str, str]:
    """os.environ without SHIMCTL_* and CONTAINERD_* (ctr reads CONTAINERD_ADDRESS etc.);
    ``path_prefix`` dirs go first on PATH (where containerd finds its shims, shims runc)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SHIMCTL_") and not k.startswith("CONTAINERD_")
    }
    if path_prefix:
        env["PATH"] = os.pathsep.join([*path_prefix, env.get("PATH", "")])
    return env


@dataclass
class Containerd:
    """One private containerd over ``node``. Start it with :meth:`start`."""

    node: Node
    binary: str = "containerd"
    namespace: str = "default"
    #: ``ctr`` and the runc shim of the same generation as ``binary`` (names or paths).
    ctr_binary: str = CTR_BINARY
    shim_binary: str = SHIM_BINARY
    #: Dirs put first on PATH for containerd (and so its shims) and ctr.
    path_prefix: tuple[str, ...] = ()
    config_path: Path = field(init=False)
    log_path: Path = field(init=False)
    tag: str = field(init=False)
    generation: int = field(default=0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _create_time: float | None = field(default=None, init=False, repr=False)
    _log_start: int = field(default=0, init=False, repr=False)
    _log_file: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.config_path = self.node.base / "containerd.toml"
        self.log_path = self.node.base / "containerd.log"
        self.config_path.write_text(config_toml(self.node))
        self.tag = hashlib.sha256(str(self.node.base).encode()).hexdigest()[:8]

    # -- naming -------------------------------------------------------------------------------

    def ids(self, *names: str) -> list[str]:
        """Container ids unique to this test: ``<name>-<hash of the node's base dir>``."""
        return [f"{name}-{self.tag}" for name in names]

    @property
    def rootfs(self) -> Path:
        """A busybox tree for ``ctr run --rootfs``."""
        return busybox_rootfs(self.node)

    # -- the process --------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """containerd's PID while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and self.running else None

    @property
    def running(self) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        try:
            ps = psutil.Process(proc.pid)
            return abs(ps.create_time() - (self._create_time or 0)) < 1e-3 and (
                ps.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.NoSuchProcess:
            return False

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start containerd and wait until ``ctr version`` answers (bounded)."""
        if self.running:
            raise ContainerdError(f"containerd (pid {self.pid}) is already running")
        self._close_log()
        self.generation += 1
        log = self.log_path.open("ab")
        log.write(f"=== shimctl tests: containerd start #{self.generation} ===\n".encode())
        log.flush()
        self._log_start = log.tell()
        self._log_file = log
        self._proc = subprocess.Popen(
            [self.binary, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=tool_env(self.path_prefix),
            start_new_session=True,
        )
        try:
            self._create_time = psutil.Process(self._proc.pid).create_time()
        except psutil.NoSuchProcess:
            self._create_time = None
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            if self._proc.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self._proc.returncode} at start; log:\n"
                    + self.log_text(current=True)[-4000:]
                )
            res = self.ctr("version", check=False, timeout=5, namespace=None)
            if res.returncode == 0:
                return
            last = res.stderr.strip()
            if time.monotonic() >= deadline:
                self.stop()
                raise ContainerdError(
                    f"containerd did not answer within {timeout}s ({last}); log:\n"
                    + self.log_text(current=True)[-4000:]
                )
            time.sleep(0.05)

    def _signal(self, sig: signal.Signals) -> bool:
        """Signal containerd if it is still the process we started (PID + create time)."""
        proc = self._proc
        if proc is None or proc.poll() is not None or self._create_time is None:
            return False
        try:
            ps = psutil.Process(proc.pid)
            if abs(ps.create_time() - self._create_time) >= 1e-3:
                return False
            os.kill(proc.pid, sig)
        except (psutil.NoSuchProcess, ProcessLookupError):
            return False
        return True

    def _reap(self, timeout: float) -> bool:
        proc = self._proc
        if proc is None:
            return True
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM containerd (by verified PID), wait, SIGKILL if it does not exit. Shims stay."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            if not self._reap(grace):
                self._signal(signal.SIGKILL)
                if not self._reap(10):
                    raise ContainerdError(f"containerd pid {self._proc.pid} survived SIGKILL")
        self._proc = None
        self._create_time = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL containerd now (a crash), by verified PID, and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            self._signal(signal.SIGKILL)
            if not self._reap(10):
                raise ContainerdError(f"containerd pid {self._proc.pid} survived SIGKILL")
        self._proc = None
        self._create_time = None
        self._close_log()

    def restart(self) -> None:
        """Stop (SIGTERM, SIGKILL if needed) and start again; waits until it answers."""
        self.stop()
        self.start()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- talking to it ------------------------------------------------------------------------

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 30,
        namespace: str | None = "",
    ) -> subprocess.CompletedProcess[str]:
        """``ctr --address <addr> -n <ns> *args`` (namespace ``None``: no ``-n``)."""
        ns = self.namespace if namespace == "" else namespace
        argv = [self.ctr_binary, "--address", self.node.address]
        if ns is not None:
            argv += ["-n", ns]
        res = subprocess.run(
            [*argv, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(self.path_prefix),
            check=False,
        )
        if check and res.returncode != 0:
            raise ContainerdError(
                f"{shlex.join(res.args)} failed ({res.returncode}): {res.stderr.strip()}"
            )
        return res

    def tasks(self, namespace: str | None = None) -> dict[str, tuple[int, str]]:
        """``ctr task ls``: id -> (pid, status)."""
        out = self.ctr("task", "ls", namespace=namespace or self.namespace).stdout
        found: dict[str, tuple[int, str]] = {}
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                found[parts[0]] = (int(parts[1]), parts[2])
        return found

    def containers(self, namespace: str | None = None) -> list[str]:
        """``ctr containers ls -q``."""
        out = self.ctr("containers", "ls", "-q", namespace=namespace or self.namespace).stdout
        return out.split()

    def run_container(self, container_id: str, *argv: str, run_args: Sequence[str] = ()) -> int:
        """``ctr run -d --null-io <run_args> --rootfs <busybox> <id> argv`` (default
        ``sleep 600``); waits until the task is RUNNING and returns its pid."""
        self.ctr(
            "run",
            "-d",
            "--null-io",
            *run_args,
            "--rootfs",
            str(self.rootfs),
            container_id,
            *(argv or ("/bin/sleep", "600")),
        )
        return self.wait_task(container_id, "RUNNING")

    def wait_task(self, task_id: str, status: str, timeout: float = 10) -> int:
        """Wait until ``ctr task ls`` shows ``task_id`` in ``status``; returns its pid."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.tasks().get(task_id)
            if seen is not None and seen[1] == status:
                return seen[0]
            if time.monotonic() >= deadline:
                raise ContainerdError(f"task {task_id} is {seen}, not {status}, after {timeout}s")
            time.sleep(0.05)

    def shim_pid(self, task_id: str, namespace: str | None = None) -> int:
        """PID of the shim server process for ``task_id`` (by argv, among this address's)."""
        ns = namespace or self.namespace
        for rec in find_address_processes(self.node.address):
            argv = list(rec.argv)
            if argv[-1:] in (["start"], ["delete"]):
                continue
            if _flag(argv, "-id") == task_id and _flag(argv, "-namespace") == ns:
                return rec.pid
        raise ContainerdError(f"no shim process for {ns}/{task_id} at {self.node.address}")

    def served_by(self, task_id: str) -> int:
        """PID of the shim answering on ``task_id``'s bundle address (ttrpc Connect).

        containerd 2.x bundles have ``bootstrap.json`` (task API v3) instead of ``address``;
        for one with neither (a 2.x shim whose containerd died before writing it) the
        address the shim derives from its argv is dialled. The bundle's ``log`` fifo is held
        open meanwhile, as containerd does: a shim whose containerd died before the shim
        opened its log blocks in that open until some reader comes."""
        bundle = self.node.bundle(task_id, self.namespace)
        boot = bundle_connection(bundle)
        if boot is None:
            socket = shim_socket_path(self.node.address, self.namespace, task_id)
            boot = Bootstrap(address=f"unix://{socket}")
        log_fd: int | None = None
        with contextlib.suppress(OSError):
            log_fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            with TaskClient.connect(
                boot.address, self.namespace, timeout=5, api_version=boot.version
            ) as task:
                return int(task.negotiate(task_id, timeout=5).shim_pid)
        finally:
            if log_fd is not None:
                os.close(log_fd)

    def open_files(self) -> set[str]:
        """Paths of the file descriptors containerd holds open."""
        pid = self.pid
        if pid is None:
            return set()
        paths: set[str] = set()
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    paths.add(os.readlink(fd))
        return paths

    # -- the log ------------------------------------------------------------------------------

    def log_text(self, *, current: bool = False) -> str:
        """containerd's log: all generations, or (``current``) since the last start."""
        try:
            with self.log_path.open("rb") as f:
                if current:
                    f.seek(self._log_start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern: str, *, timeout: float = 10, current: bool = True) -> str:
        """Wait until a log line matches the regex ``pattern``; returns that line."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_text(current=current).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= deadline:
                raise ContainerdError(f"no log line matches {pattern!r} after {timeout}s")
            time.sleep(0.05)

    # -- containerd #6860 ---------------------------------------------------------------------

    def crash_during_create(
        self, container_id: str, *argv: str, run_args: Sequence[str] = (), timeout: float = 20
    ) -> int:
        """Reproduce containerd #6860: ``ctr run`` a container whose runtime is a wrapper around
        the runc shim; once the shim's ``start`` verb has returned (the shim runs, its
        ``address`` is written) but before containerd reads it, containerd is SIGKILLed.

        Left behind: the container record, a bundle with no ``shim-binary-path`` and a live
        shim with no task. The record names the wrapper as runtime; it passes every later
        call straight to the runc shim. containerd stays stopped; returns the shim's PID
        (with a CRI sandbox-id annotation naming a running sandbox, the runc shim joins the
        sandbox's shim instead of starting one: that PID is returned).
        """
        base = self.node.base / "crash"
        base.mkdir(exist_ok=True)
        armed, started, release = base / "armed", base / "started", base / "release"
        wrapper = self.crash_wrapper()
        for marker in (started, release):
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        armed.touch()
        proc = subprocess.Popen(
            [
                self.ctr_binary,
                "--address",
                self.node.address,
                "-n",
                self.namespace,
                "run",
                "-d",
                "--null-io",
                *run_args,
                "--runtime",
                str(wrapper),
                "--rootfs",
                str(self.rootfs),
                container_id,
                *(argv or ("/bin/sleep", "600")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=tool_env(self.path_prefix),
        )
        try:
            deadline = time.monotonic() + timeout
            while not started.exists():
                if proc.poll() is not None:
                    out, err = proc.communicate()
                    raise ContainerdError(f"ctr run ended before the shim started: {out}{err}")
                if time.monotonic() >= deadline:
                    raise ContainerdError("the wrapped shim's start verb did not return in time")
                time.sleep(0.02)
            self.kill()
        finally:
            release.touch()
            try:
                proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        if proc.returncode == 0:
            raise ContainerdError("ctr run succeeded although containerd was killed")
        return self.served_by(container_id)

    def crash_wrapper(self) -> Path:
        """The runtime wrapper of :meth:`crash_during_create` (armed by ``crash/armed``)."""
        base = self.node.base / "crash"
        base.mkdir(exist_ok=True)
        shim = shutil.which(self.shim_binary)
        if shim is None:
            raise ContainerdError(f"{self.shim_binary} is not on PATH")
        q = {name: shlex.quote(str(base / name)) for name in ("armed", "started", "release")}
        script = f"""#!/bin/sh
# Runtime wrapper for tests: runs the runc shim; when armed, holds the output of its
# `start` verb until the test has killed containerd (containerd #6860).
out=$({shlex.quote(shim)} "$@")
rc=$?
for last in "$@"; do :; done
if [ "$last" = start ] && [ -e {q["armed"]} ]; then
    rm -f {q["armed"]}
    : > {q["started"]}
    n=0
    while [ ! -e {q["release"]} ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n + 1)); done
fi
printf '%s' "$out"
exit $rc
"""
        path = base / "containerd-shim-crash-v2"
        path.write_text(script)
        path.chmod(0o755)
        return path

    # -- teardown -----------------------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove every task and container record (all namespaces), then stop containerd.
        Returns what failed (the node's safety net handles what is left)."""
        problems: list[str] = []
        if not self.running:
            try:
                self.start()
            except ContainerdError as err:
                problems.append(f"could not start containerd for cleanup: {err}")
        if self.running:
            try:
                namespaces = self.ctr("namespaces", "ls", "-q", namespace=None).stdout.split()
            except ContainerdError as err:
                problems.append(str(err))
                namespaces = []
            for ns in namespaces:
                for what in ("tasks", "containers"):
                    res = self.ctr(what, "ls", "-q", namespace=ns, check=False)
                    for item in res.stdout.split():
                        cmd = ("task", "rm", "-f") if what == "tasks" else ("container", "rm")
                        rm = self.ctr(*cmd, item, namespace=ns, check=False)
                        if rm.returncode != 0:
                            problems.append(f"{ns}/{item}: {rm.stderr.strip()}")
        try:
            self.stop()
        except ContainerdError as err:
            problems.append(str(err))
        return problems


def bundle_connection(bundle: Path) -> Bootstrap | None:
    """How to reach a bundle's shim, as containerd 2.x reads it: ``bootstrap.json``, else
    ``address`` (either may hold a bare address or bootstrap JSON); None if neither exists."""
    for name in ("bootstrap.json", "address"):
        try:
            text = (bundle / name).read_text()
        except FileNotFoundError:
            continue
        return parse_bootstrap(text, source=str(bundle / name))
    return None


def _flag(argv: Sequence[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
    return None


@contextlib.contextmanager
def running_containerd(node: Node, **options: Any) -> Iterator[Containerd]:
    """A started private containerd over ``node``; cleaned up and stopped at the end.
    ``options``: more :class:`Containerd` fields (binaries of another generation)."""
    cd = Containerd(node, **options)
    try:
        cd.start()
        yield cd
    finally:
        problems = cd.cleanup()
        if problems:
            import warnings

            warnings.warn("containerd cleanup: " + "; ".join(problems), stacklevel=2)
