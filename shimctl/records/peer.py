"""Is anything listening at containerd's address, and which process is it?

A plain AF_UNIX connect, bounded by a timeout, answers the first question without importing
grpcio (a refused or missing socket is the common "containerd is stopped" case, and costs
nothing). SO_PEERCRED on the connected socket names the listening process (socket(7): the
credentials of the peer at connect time), identified by PID and start time as every process
shimctl reasons about.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from shimctl.node import processes
from shimctl.node.processes import ProcessRef

_UCRED = struct.Struct("3i")  # pid, uid, gid
UNIX_PREFIXES = ("unix://", "unix:")


def socket_path(address: str) -> str:
    """The socket path of a containerd gRPC address (a path, or unix://path)."""
    for prefix in UNIX_PREFIXES:
        if address.startswith(prefix):
            return address[len(prefix) :]
    return address


@dataclass(frozen=True, slots=True)
class Peer:
    """The result of dialling the address: ``ref`` is set when something accepted."""

    accepted: bool
    ref: ProcessRef | None = None
    error: str = ""


def process_ref(pid: int) -> ProcessRef | None:
    """PID + start time from /proc, computed exactly as shimctl.node.processes does, so refs
    compare equal with those of its process scans."""
    return processes.live_ref(pid, processes.read_boot_time())


def dial(address: str, timeout: float) -> Peer:
    """Connect to ``address`` (bounded by ``timeout``), read the peer's credentials, close."""
    path = socket_path(address)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(max(timeout, 0.001))
        try:
            sock.connect(path)
        except OSError as err:
            reason = err.strerror or type(err).__name__
            return Peer(False, error=f"cannot connect to {path}: {reason}")
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            pid = _UCRED.unpack(raw)[0]
        except (OSError, struct.error):
            return Peer(True)
        return Peer(True, process_ref(pid) if pid > 0 else None)
    finally:
        sock.close()
