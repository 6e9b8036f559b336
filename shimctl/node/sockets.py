"""Shim sockets in /run/containerd/s: where an address points, and whether anyone listens."""

from __future__ import annotations

import errno
import os
import socket
import stat
import time
from enum import Enum
from pathlib import Path

from shimctl.node.fs import is_within
from shimctl.node.gopath import go_clean, go_join
from shimctl.shim.address import unix_address, unix_path


class SocketState(Enum):
    LISTENING = "listening"
    REFUSED = "refused"
    MISSING = "missing"
    NOT_A_SOCKET = "not-a-socket"


def derive_address(containerd_address: str, namespace: str, key: str, socket_dir: Path) -> str:
    """The address a runc-style shim derives: sha256 of Go's filepath.Join(address, ns, key)
    (CreateSocketAddress, containerd 301026e5 pkg/shim/util_unix.go), in `socket_dir`."""
    joined = go_join(containerd_address, namespace, key)
    import hashlib  # only orphan and 2.x-crash handling need it; keep start's imports small

    digest = hashlib.sha256(joined.encode()).hexdigest()
    return unix_address(f"{socket_dir}/{digest}")


def socket_path(address: str) -> Path | None:
    """The file a `unix://` address names; None for abstract (or junk) addresses."""
    path = socket_file(address)
    return Path(path) if path is not None else None


def socket_file(address: str) -> str | None:
    """socket_path as a normalised string (cheap, for keys and system calls). Normalised as
    Go's Clean does: Linux reads `//run` as `/run`, so both must name one file here."""
    path = unix_path(address)
    if path is None or not path.startswith("/") or "\0" in path:
        return None
    return go_clean(path)


# /proc/net/unix's Flags column: __SO_ACCEPTCON, a socket that listen() was called on
# (Linux include/uapi/linux/net.h; net/unix/af_unix.c, unix_seq_show).
_ACCEPTCON = 0x10000
_MAX_NET_UNIX = 64 << 20


def listening_paths() -> frozenset[str]:
    """Paths of the listening unix sockets /proc/net/unix shows (this network namespace
    only: a path missing here may still listen, so it proves nothing; a path here listens)."""
    try:
        with open("/proc/net/unix", "rb") as f:
            data = f.read(_MAX_NET_UNIX)
    except OSError:
        return frozenset()
    found = set()
    for line in data.splitlines()[1:]:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith(b"/"):
            try:
                listening = int(fields[3], 16) & _ACCEPTCON
            except ValueError:
                continue
            if listening:
                found.add(os.fsdecode(fields[7]))
    return frozenset(found)


def probe(path: str | Path, *, timeout: float = 0.5) -> SocketState:
    try:
        st = os.lstat(path)
    except OSError:
        return SocketState.MISSING
    if not stat.S_ISSOCK(st.st_mode):
        return SocketState.NOT_A_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        return SocketState.LISTENING
    except OSError as err:
        if err.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return SocketState.REFUSED
        # A full backlog or a timeout means a process holds it: treat it as alive.
        return SocketState.LISTENING
    finally:
        sock.close()


def probe_address(address: str) -> SocketState:
    """Probe a plain socket path or a unix:// address (containerd's own sockets)."""
    path = socket_path(address) if unix_path(address) is not None else Path(address)
    return probe(path) if path is not None else SocketState.MISSING


def address_state(address: str, *, settle: float = 0.0) -> SocketState | None:
    """The state of the socket file behind a shim's `unix://` address (re-probed for up to
    `settle` seconds while it accepts); None for an address with no file (abstract)."""
    path = socket_path(address)
    return settle_state(path, settle) if path is not None else None


def settle_state(path: Path, settle: float) -> SocketState:
    """Probe `path`, re-probing for up to `settle` seconds while it still accepts: a dying
    process lets go of its listening socket only after it stops looking alive (its argv is
    gone, its threads are still closing files)."""
    deadline = time.monotonic() + settle
    while (state := probe(path)) is SocketState.LISTENING and time.monotonic() < deadline:
        time.sleep(0.02)
    return state


def remove_if_stale(address: str, socket_dir: Path, *, settle: float = 0.0) -> bool:
    """Unlink the socket file behind `address` if it is in `socket_dir` and refuses
    connections. True if a file was removed.

    `settle`: after shimctl killed the shim, how long to wait for its socket to close (a
    multi-threaded process is a zombie before all its threads have let go of its files)."""
    path = socket_path(address)
    if path is None or not is_within(path, socket_dir) or path.parent != socket_dir:
        return False
    if settle_state(path, settle) is not SocketState.REFUSED:
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
