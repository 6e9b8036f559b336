"""Shared helpers for tests, including the ones that start REAL shim processes.

Import them as ``from tests.support.helpers import ...`` (``tests`` is a package).

The safety net (:func:`safety_net`, :func:`teardown_node`) is what the ``node`` fixture in
``tests/conftest.py`` runs after every test that uses it. It finds leaked processes by the
exact argv pair ``-address <node.address>`` (every test gets a unique address), never by
process name.

A killed (or shut-down) shim server is re-parented to pid 1 and stays a zombie until pid 1
reaps it (here that takes up to a few seconds): use :func:`pid_alive` / :func:`wait_gone`,
which count a zombie as gone, never ``psutil.pid_exists``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

SHIM_BINARY = "containerd-shim-runc-v2"
RUNC_BINARY = "runc"
CONTAINERD_BINARY = "containerd"
BUSYBOX = Path("/bin/busybox")
BUSYBOX_APPLETS = ("sh", "sleep", "true", "false", "cat", "echo", "ls")
SHIM_SOCKET_DIR = Path("/run/containerd/s")
TASK_PLUGIN_DIR = "io.containerd.runtime.v2.task"
DEFAULT_RUNC_ROOT = "/run/containerd/runc"
#: ``user_properties`` key under which the ``node`` teardown records leaks.
LEAK_PROPERTY = "shimctl_leak"
#: Directories added to PATH (runc lives in /usr/sbin on Debian).
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class ShimLeakWarning(UserWarning):
    """A test left shim (or container) processes behind; the safety net cleaned up."""


# ---------------------------------------------------------------------------------------------
# The node: a private containerd root/state/address per test


@dataclass(frozen=True)
class Node:
    """Private containerd directories and addresses for one test."""

    base: Path
    root: Path
    state: Path
    address: str
    ttrpc_address: str
    namespace: str = "default"

    @classmethod
    def under(cls, base: Path, namespace: str = "default") -> Node:
        """The standard layout under ``base`` (usually ``tmp_path``); creates root and state."""
        address = str(base / "containerd.sock")
        node = cls(
            base=base,
            root=base / "root",
            state=base / "state",
            address=address,
            ttrpc_address=address + ".ttrpc",
            namespace=namespace,
        )
        node.root.mkdir(parents=True, exist_ok=True)
        node.state.mkdir(parents=True, exist_ok=True)
        return node

    def cli_args(self) -> list[str]:
        """shimctl's global options (they go before the subcommand)."""
        return [
            "--root",
            str(self.root),
            "--state",
            str(self.state),
            "--address",
            self.address,
            "--ttrpc-address",
            self.ttrpc_address,
        ]

    def env(self) -> dict[str, str]:
        """A copy of os.environ with ``NO_COLOR=1`` and without any ``SHIMCTL_*`` variable."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIMCTL_")}
        env["NO_COLOR"] = "1"
        # Never read the machine's /etc/containerd/config.toml in tests.
        env["SHIMCTL_CONFIG"] = str(self.base / "no-config.toml")
        return env

    @property
    def task_state(self) -> Path:
        """``<state>/io.containerd.runtime.v2.task`` (STATE in layout.md)."""
        return self.state / TASK_PLUGIN_DIR

    @property
    def task_root(self) -> Path:
        """``<root>/io.containerd.runtime.v2.task`` (ROOT in layout.md)."""
        return self.root / TASK_PLUGIN_DIR

    def bundle(self, task_id: str, namespace: str | None = None) -> Path:
        """The bundle path of ``task_id`` (not created)."""
        return self.task_state / (namespace or self.namespace) / task_id

    def workdir(self, task_id: str, namespace: str | None = None) -> Path:
        """The work dir path of ``task_id`` (not created)."""
        return self.task_root / (namespace or self.namespace) / task_id

    @property
    def runc_root(self) -> Path:
        """A private runc root (pass it as runc ``Options.root``; runc appends ``/<ns>``).

        The default runc root ``/run/containerd/runc/<ns>`` is shared by all tests (and by
        the parallel xdist workers), so container ids could collide there.
        """
        return self.base / "runc"


# ---------------------------------------------------------------------------------------------
# Binaries


def ensure_sbin_on_path() -> None:
    """Make sure /usr/sbin etc. are on PATH (runc is /usr/sbin/runc; shims inherit PATH)."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    missing = [d for d in SBIN_DIRS if d not in parts]
    if missing:
        os.environ["PATH"] = os.pathsep.join([p for p in parts if p] + missing)


def elf_is_static(path: Path) -> bool:
    """True if ``path`` is an ELF executable without a PT_INTERP (program interpreter)."""
    try:
        with path.open("rb") as f:
            ident = f.read(16)
            if len(ident) < 16 or ident[:4] != b"\x7fELF":
                return False
            end = "<" if ident[5] == 1 else ">"
            is64 = ident[4] == 2
            hdr = f.read(48 if is64 else 36)
            if is64:
                phoff = struct.unpack_from(end + "Q", hdr, 16)[0]
                phentsize, phnum = struct.unpack_from(end + "HH", hdr, 38)
            else:
                phoff = struct.unpack_from(end + "I", hdr, 12)[0]
                phentsize, phnum = struct.unpack_from(end + "HH", hdr, 26)
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                raw = f.read(4)
                if len(raw) < 4:
                    return False
                if struct.unpack(end + "I", raw)[0] == 3:  # PT_INTERP
                    return False
            return True
    except OSError:
        return False


def missing_real_binaries() -> list[str]:
    """What the real-shim tests need and this machine lacks (empty list = all there)."""
    ensure_sbin_on_path()
    missing = [
        f"{name} (not on PATH)"
        for name in (SHIM_BINARY, RUNC_BINARY, CONTAINERD_BINARY)
        if shutil.which(name) is None
    ]
    if not BUSYBOX.is_file():
        missing.append(f"{BUSYBOX} (missing; Debian package busybox-static)")
    elif not elf_is_static(BUSYBOX):
        missing.append(f"{BUSYBOX} (not statically linked; Debian package busybox-static)")
    if os.geteuid() != 0:
        missing.append("root privileges (the shim needs /run/containerd/s)")
    return missing


def require_real_binaries() -> None:
    """Skip the calling test (fail it when ``CI=true``) unless the real binaries are there."""
    missing = missing_real_binaries()
    if not missing:
        return
    msg = "real shim test needs: " + ", ".join(missing) + " (run scripts/install-deps.sh)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def populate_busybox_rootfs(rootfs: Path) -> None:
    """Copy /bin/busybox to ``rootfs/bin/busybox`` and link the usual applets to it."""
    bindir = rootfs / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, bindir / "busybox")
    for applet in BUSYBOX_APPLETS:
        link = bindir / applet
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("busybox")


# ---------------------------------------------------------------------------------------------
# Running the CLI


def run_cli(
    node: Node, *args: str, stdin_text: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m shimctl <node global options> *args``; stdout/stderr captured as text."""
    argv = [sys.executable, "-m", "shimctl", *node.cli_args(), *args]
    if stdin_text is None:
        return subprocess.run(
            argv,
            env=node.env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    return subprocess.run(
        argv,
        env=node.env(),
        input=stdin_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# Processes


def _same_create_time(a: float, b: float) -> bool:
    return abs(a - b) < 1e-3


def pid_alive(pid: int, create_time: float | None = None) -> bool:
    """Is ``pid`` a live process (a zombie is not)? With ``create_time``, it must also match."""
    try:
        proc = psutil.Process(pid)
        if create_time is not None and not _same_create_time(proc.create_time(), create_time):
            return False
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # includes ZombieProcess
        return False
    except psutil.AccessDenied:
        return True


def wait_gone(pid: int, create_time: float | None, timeout: float = 5.0) -> bool:
    """Wait until ``pid`` is gone or a zombie; True if it went within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid, create_time):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------
# Shim socket address (layout.md §7)


def go_filepath_join(*elems: str) -> str:
    """Go's ``filepath.Join`` on Unix: skip empty elements, join with ``/``, then Clean."""
    parts = [e for e in elems if e != ""]
    if not parts:
        return ""
    return go_clean("/".join(parts))


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: like posixpath.normpath, but a leading ``//`` becomes ``/``."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def shim_socket_path(address: str, namespace: str, key: str) -> Path:
    """``/run/containerd/s/<sha256 hex of filepath.Join(address, namespace, key)>``."""
    digest = hashlib.sha256(go_filepath_join(address, namespace, key).encode()).hexdigest()
    return SHIM_SOCKET_DIR / digest


# ---------------------------------------------------------------------------------------------
# Safety net


def argv_has_address(argv: Sequence[str], address: str) -> bool:
    """True if argv holds the exact pair ``-address <address>`` (also ``--address``/``=``)."""
    for i, arg in enumerate(argv):
        if arg in ("-address", "--address") and i + 1 < len(argv) and argv[i + 1] == address:
            return True
        if arg in (f"-address={address}", f"--address={address}"):
            return True
    return False


@dataclass(frozen=True)
class ProcessRecord:
    """A process the safety net found: identity plus what it read before killing it."""

    pid: int
    create_time: float
    argv: tuple[str, ...]
    bundle: Path | None = None  # the cwd, for processes matched by -address
    socket: Path | None = None  # from <bundle>/address, if under /run/containerd/s/
    descendant_of: int | None = None  # for a descendant (e.g. a container process)


@dataclass
class SafetyNetReport:
    """What :func:`safety_net` did."""

    killed: list[ProcessRecord] = field(default_factory=list)
    survivors: list[ProcessRecord] = field(default_factory=list)  # still alive after SIGKILL
    sockets_removed: list[Path] = field(default_factory=list)
    runc_deleted: list[str] = field(default_factory=list)  # "<runc root>:<id>"
    unmounted: list[str] = field(default_factory=list)  # mount points left under the node

    @property
    def leaked(self) -> bool:
        """True if the test left processes or containers behind."""
        return bool(self.killed or self.survivors or self.runc_deleted or self.unmounted)

    def describe(self) -> str:
        parts: list[str] = []
        for rec in self.killed:
            what = " ".join(rec.argv)[:200] or "?"
            via = f" (descendant of {rec.descendant_of})" if rec.descendant_of else ""
            parts.append(f"killed pid {rec.pid}{via}: {what}")
        parts.extend(f"pid {rec.pid} SURVIVED SIGKILL" for rec in self.survivors)
        parts.extend(f"runc delete --force {c}" for c in self.runc_deleted)
        parts.extend(f"umount {m}" for m in self.unmounted)
        return "; ".join(parts)


def socket_path_from_address(text: str) -> Path | None:
    """The socket file of an ``address`` file's content, or None (abstract or not ours)."""
    text = text.strip()
    if not text.startswith("unix://"):
        return None
    path = Path(posixpath.normpath(text[len("unix://") :]))
    if not path.is_absolute() or path == SHIM_SOCKET_DIR:
        return None
    if not path.is_relative_to(SHIM_SOCKET_DIR):
        return None
    return path


def _read_socket_of_bundle(bundle: Path) -> Path | None:
    # Non-blocking and no-follow: a hostile test may put a FIFO or a link at `address`.
    try:
        fd = os.open(bundle / "address", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return socket_path_from_address(os.read(fd, 4096).decode(errors="replace"))
    finally:
        os.close(fd)


def socket_has_listener(path: Path) -> bool:
    """Does some process listen on the unix socket ``path``? (Unknown errors: assume yes.)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except BlockingIOError:  # backlog full: a listener exists
            return True
        except OSError:
            return True
        return True


def remove_stale_socket(path: Path, settle: float = 0.0) -> bool:
    """Remove ``path`` if it is a socket under /run/containerd/s/ and nobody listens on it
    (waiting up to ``settle`` seconds for a dying listener to let go)."""
    if socket_path_from_address("unix://" + str(path)) is None:
        return False
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return False
    except OSError:
        return False
    deadline = time.monotonic() + settle
    while socket_has_listener(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def find_address_processes(address: str) -> list[ProcessRecord]:
    """Live processes whose argv holds the exact pair ``-address <address>``."""
    found: list[ProcessRecord] = []
    me = os.getpid()
    for proc in psutil.process_iter(["cmdline", "create_time", "status"]):
        try:
            info = proc.info
            if proc.pid == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            argv = info["cmdline"] or []
            if not argv_has_address(argv, address):
                continue
            bundle: Path | None
            try:
                bundle = Path(proc.cwd())
            except psutil.Error:
                bundle = None
            found.append(
                ProcessRecord(
                    pid=proc.pid,
                    create_time=info["create_time"],
                    argv=tuple(argv),
                    bundle=bundle,
                    socket=_read_socket_of_bundle(bundle) if bundle else None,
                )
            )
        except psutil.Error:
            continue
    return found


def _descendants(rec: ProcessRecord) -> list[ProcessRecord]:
    out: list[ProcessRecord] = []
    try:
        proc = psutil.Process(rec.pid)
        if not _same_create_time(proc.create_time(), rec.create_time):
            return out
        children = proc.children(recursive=True)
    except psutil.Error:
        return out
    for child in children:
        try:
            out.append(
                ProcessRecord(
                    pid=child.pid,
                    create_time=child.create_time(),
                    argv=tuple(child.cmdline()),
                    descendant_of=rec.pid,
                )
            )
        except psutil.Error:
            continue
    return out


def kill_recorded(rec: ProcessRecord) -> bool:
    """SIGKILL ``rec`` by pid after re-checking its create_time. False if it was gone."""
    try:
        if not _same_create_time(psutil.Process(rec.pid).create_time(), rec.create_time):
            return False
        os.kill(rec.pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False
    return True


def _runc_containers_of(node: Node) -> list[tuple[str, str, str]]:
    """(runc binary, runc root, id) of runc containers whose bundle is one of the node's."""
    out: list[tuple[str, str, str]] = []
    for bundle in sorted(node.task_state.glob("*/*")):
        ns, task_id = bundle.parent.name, bundle.name
        if task_id.startswith(".") or ns.startswith(".") or not bundle.is_dir():
            continue
        root_base, runc = DEFAULT_RUNC_ROOT, RUNC_BINARY
        try:
            opts = json.loads((bundle / "options.json").read_text())
            if isinstance(opts, dict):
                root_base = str(opts.get("root") or root_base)
                runc = str(opts.get("binaryName") or opts.get("binary_name") or runc)
        except (OSError, ValueError):
            pass
        runc_root = os.path.join(root_base, ns)
        if not os.path.exists(os.path.join(runc_root, task_id, "state.json")):
            continue
        try:
            res = subprocess.run(
                [runc, "--root", runc_root, "state", task_id],
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            state = json.loads(res.stdout) if res.returncode == 0 else {}
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        theirs = state.get("bundle") if isinstance(state, dict) else None
        if isinstance(theirs, str) and os.path.realpath(theirs) == os.path.realpath(bundle):
            out.append((runc, runc_root, task_id))
    return out


def safety_net(node: Node) -> SafetyNetReport:
    """Kill what a test left behind for ``node`` and remove its stale shim sockets.

    1. Every live process whose argv has the exact pair ``-address <node.address>``, and its
       descendants (container processes), is SIGKILLed by pid after re-checking its
       create_time; then we wait (≤ 5 s) until it is gone or a zombie. The socket named in
       ``<cwd>/address`` (cwd = bundle, read before the kill) is removed if it is under
       /run/containerd/s/ and nobody listens on it.
    2. runc containers whose runc state names one of the node's bundles: ``runc delete --force``.
    3. For every bundle under ``node.state/io.containerd.runtime.v2.task/*/*``: remove the
       socket its ``address`` file names, if under /run/containerd/s/ and nobody listens.
    """
    report = SafetyNetReport()
    matched = find_address_processes(node.address)
    targets: dict[int, ProcessRecord] = {}
    for rec in matched:
        targets.setdefault(rec.pid, rec)
        for child in _descendants(rec):
            targets.setdefault(child.pid, child)
    killed = [rec for rec in targets.values() if kill_recorded(rec)]
    for rec in killed:
        (report.killed if wait_gone(rec.pid, rec.create_time, 5.0) else report.survivors).append(
            rec
        )
        # A multi-threaded process shows as a zombie while its other threads still hold its
        # files for a moment: give its listening socket a little time to close.
        if rec.socket is not None and remove_stale_socket(rec.socket, settle=2.0):
            report.sockets_removed.append(rec.socket)

    for runc, runc_root, task_id in _runc_containers_of(node):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(
                [runc, "--root", runc_root, "delete", "--force", task_id],
                capture_output=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        report.runc_deleted.append(f"{runc_root}:{task_id}")

    for bundle in sorted(node.task_state.glob("*/*")):
        sock = _read_socket_of_bundle(bundle)
        if sock is not None and remove_stale_socket(sock):
            report.sockets_removed.append(sock)
    return report


def unmount_under(base: Path) -> list[str]:
    """Unmount (lazily, deepest first) every mount point under ``base``: a bundle's rootfs
    stays mounted when its shim was killed before the task was deleted."""
    from shimctl.node.mounts import mount_points_under

    points = sorted(mount_points_under(base), key=len, reverse=True)
    for point in points:
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return points


def teardown_node(
    node: Node, user_properties: list[tuple[str, object]] | None = None, nodeid: str = ""
) -> SafetyNetReport:
    """Run :func:`safety_net`; if it had to clean up leaks, warn and record them.

    The record goes to ``user_properties`` (the test item's), so that the session summary in
    conftest.py sees it also from xdist workers.
    """
    report = safety_net(node)
    report.unmounted = unmount_under(node.base)
    if report.leaked:
        text = f"{nodeid or node.address}: {report.describe()}"
        if user_properties is not None:
            user_properties.append((LEAK_PROPERTY, text))
        warnings.warn(f"shim safety net: {text}", ShimLeakWarning, stacklevel=2)
    return report
