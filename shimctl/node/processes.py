"""Shim processes: find them, prove a PID is the shim we mean, and signal only that one.

A process is identified by PID *and* start time, so a reused PID is never mistaken for the
shim. A zombie counts as gone (PID 1 may reap slowly on these machines).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from shimctl.errors import Unsafe

if TYPE_CHECKING:
    import psutil
else:
    from shimctl.lazy import LazyModule

    # psutil costs ~10 ms to import; `start` only needs it when something goes wrong.
    psutil = LazyModule("psutil")

# Flags the shim server process is started with; a `start`/`delete` verb process has a
# trailing action word instead.
_VERBS = {"start", "delete"}


# NamedTuples: immutable, and cheap to define on every run's import path.
class ProcessRef(NamedTuple):
    """A process identified by PID *and* start time: a reused PID is another process."""

    pid: int
    create_time: float


class ShimProcess(NamedTuple):
    ref: ProcessRef
    namespace: str
    id: str
    address: str
    cwd: str | None
    argv: tuple[str, ...]


def flag_value(argv: list[str] | tuple[str, ...], flag: str) -> str | None:
    """Value of a Go-style `-flag value` (or `-flag=value`) in argv."""
    for i, arg in enumerate(argv):
        for prefix in (flag, "-" + flag):
            if arg == prefix and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(prefix + "="):
                return arg[len(prefix) + 1 :]
    return None


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def ref_of(pid: int) -> ProcessRef | None:
    """The live process with this PID, or None if there is none (or only a zombie)."""
    try:
        proc = psutil.Process(pid)
        if not _alive(proc):
            return None
        return ProcessRef(pid, proc.create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def is_alive(ref: ProcessRef) -> bool:
    try:
        return _same_live(psutil.Process(ref.pid), ref)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _same_live(proc: psutil.Process, ref: ProcessRef) -> bool:
    """`proc` is the process `ref` names (same start time), and not a zombie."""
    return proc.create_time() == ref.create_time and _alive(proc)


def shim_process(ref: ProcessRef) -> ShimProcess | None:
    """Describe `ref` if it is a live shim server process (by its argv), else None."""
    try:
        proc = psutil.Process(ref.pid)
        if not _same_live(proc, ref):
            return None
        argv = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return _describe(proc, ref, argv)


def _describe(proc: psutil.Process, ref: ProcessRef, argv: list[str]) -> ShimProcess | None:
    try:
        cwd: str | None = proc.cwd()
    except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
        cwd = None
    return _shim_of(ref, argv, cwd)


def _shim_of(ref: ProcessRef, argv: list[str], cwd: str | None) -> ShimProcess | None:
    if not argv or argv[-1] in _VERBS:
        return None
    ns = flag_value(argv, "-namespace")
    id_ = flag_value(argv, "-id")
    address = flag_value(argv, "-address")
    if not (ns and id_ and address):
        return None
    return ShimProcess(ref, ns, id_, address, cwd, tuple(argv))


def find_shims(address: str) -> list[ShimProcess]:
    """Every live shim server process started with `-address <address>`.

    One pass over /proc with plain reads (psutil would cost ~0.1 ms a process): most
    processes are dismissed by one substring test on their argv. Start times are computed
    exactly as psutil computes them, so refs found here compare equal to psutil's."""
    wanted = os.fsencode(address)
    boot_time = read_boot_time()
    found = []
    try:
        pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        pids = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except OSError:
            continue  # gone, or not ours to read
        if wanted not in raw:
            continue
        ref = live_ref(pid, boot_time)
        if ref is None:
            continue
        argv = _split_cmdline(raw)
        if flag_value(argv, "-address") != address:
            continue
        shim = _shim_of(ref, argv, _cwd(pid))
        if shim is not None:
            found.append(shim)
    return found


def still_alive(ref: ProcessRef) -> bool:
    """`ref` is still the same live process (not a zombie), read from /proc as find_shims
    reads it: for a scan's results that may be a moment old."""
    return live_ref(ref.pid, read_boot_time()) == ref


def live_ref(pid: int, boot_time: float) -> ProcessRef | None:
    """(pid, start time) of a live process, None if it is gone or a zombie. The start time
    is psutil's: boot time + starttime ticks / clock ticks."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the parenthesised name: state is the first, starttime the 20th.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return ProcessRef(pid, float(fields[19]) / _clock_ticks() + boot_time)


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def read_boot_time() -> float:
    """/proc/stat's btime, as psutil reads it."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


def _split_cmdline(raw: bytes) -> list[str]:
    """argv from /proc/<pid>/cmdline, split the way psutil splits it."""
    text = raw.decode("utf-8", "surrogateescape")
    if not text:
        return []
    # NUL-separated; a process that rewrote its title may use spaces instead.
    sep = "\0" if text.endswith("\0") else " "
    text = text.removesuffix(sep)
    argv = text.split(sep)
    if sep == "\0" and len(argv) == 1 and " " in text:
        argv = text.split(" ")
    return argv


def _cwd(pid: int) -> str | None:
    """The process's working directory, as psutil reports it; None if unreadable."""
    try:
        path = os.readlink(f"/proc/{pid}/cwd").split("\0")[0]
    except OSError:
        return None
    if path.endswith(" (deleted)") and not os.path.lexists(path):
        path = path[: -len(" (deleted)")]
    return path


def shim_mismatch(
    shim: ShimProcess, *, namespace: str, address: str, bundle: Path, shared: bool = False
) -> str | None:
    """Why `shim` is not a shim of the bundle dir `bundle`, or None when it is: the one
    predicate every signal, Shutdown and "is it alive" decision rests on.

    A shim is started with `-namespace`, `-id` and `-address` flags and the bundle as its
    working dir (containerd v1.7.24 pkg/shim/util.go, Command: `cmd.Dir = config.Path`). It is
    this bundle's own shim when both flags agree and its id or its cwd is the bundle's. With
    `shared` (checking the process that answered on the bundle's address), a shim whose cwd is
    another bundle of the same namespace also counts: a grouped shim serves its pod's bundles
    from the sandbox's bundle dir. Whether the process is still the one seen (PID and start
    time) is the caller's part: see verify_shim."""
    if shim.namespace != namespace or shim.address != address:
        return (
            f"process {shim.ref.pid} is a shim of namespace {shim.namespace!r} at "
            f"{shim.address!r}, not of {namespace!r} at {address!r}"
        )
    if shim.id == bundle.name or shim.cwd == str(bundle):
        return None
    if shared and shim.cwd is not None and os.path.dirname(shim.cwd) == str(bundle.parent):
        return None
    return f"process {shim.ref.pid} is the shim of {shim.id!r}, not of {bundle.name!r}"


def is_shim_of(
    shim: ShimProcess, *, namespace: str, address: str, bundle: Path, shared: bool = False
) -> bool:
    """`shim` is a shim of `bundle` (see shim_mismatch)."""
    return (
        shim_mismatch(shim, namespace=namespace, address=address, bundle=bundle, shared=shared)
        is None
    )


def verify_shim(
    pid: int,
    *,
    namespace: str,
    address: str,
    bundle: Path,
    shared: bool = True,
    seen: ProcessRef | None = None,
    known: Mapping[int, ShimProcess] | None = None,
) -> ShimProcess:
    """Prove `pid` is a live shim server process of `bundle` (shim_mismatch; `shared=False`,
    as before a kill, accepts only the bundle's own shim). With `seen`, it must also still be
    the process seen then (same start time): a PID reused since is another process. Raise
    Unsafe otherwise.

    `known`: shims a find_shims scan just found, by pid; a pid not among them is looked up."""
    shim = known.get(pid) if known else None
    if shim is None:
        ref = ref_of(pid)
        shim = shim_process(ref) if ref else None
    if shim is None:
        raise Unsafe(f"process {pid} is not a live shim server process")
    if seen is not None and shim.ref != seen:
        raise Unsafe(f"process {pid} is not the process seen before: its PID was reused")
    why = shim_mismatch(shim, namespace=namespace, address=address, bundle=bundle, shared=shared)
    if why is not None:
        raise Unsafe(why)
    return shim


def wait_gone(ref: ProcessRef, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while is_alive(ref):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def send_signal(ref: ProcessRef, sig: int, *, group: bool = False) -> bool:
    """Signal `ref` only if it is still the same live process. False if it is already gone.

    With `group`, the signal goes to its whole process group instead, but only while the
    process (checked just before) leads that group and the group is not shimctl's own: a shim
    is started setpgid, so its group holds it and the helpers it runs (runc), never anything
    of ours. A process that merely belongs to some group is signalled alone."""
    try:
        if not _same_live(psutil.Process(ref.pid), ref):
            return False
        if group and own_process_group(ref) and ref.pid != os.getpgrp():
            os.killpg(ref.pid, sig)
        else:
            os.kill(ref.pid, sig)
        return True
    except (psutil.NoSuchProcess, ProcessLookupError):
        return False


def terminate(ref: ProcessRef, *, grace: float, group: bool = True) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds, to the verified process `ref` (and its
    process group if it leads its own, see send_signal). True once the process is gone.
    Once the leader is gone its group is not signalled again: the group can no longer be
    told apart from one a new process with the same PID might lead."""
    if not send_signal(ref, signal.SIGTERM, group=group):
        return True
    if wait_gone(ref, grace):
        return True
    send_signal(ref, signal.SIGKILL, group=group)
    return wait_gone(ref, max(grace, 2.0))


def own_process_group(ref: ProcessRef) -> bool:
    """True if the process leads its own process group (the shim was started setpgid)."""
    try:
        return os.getpgid(ref.pid) == ref.pid
    except ProcessLookupError:
        return False


def started_at_wall_clock(ref: ProcessRef) -> float | None:
    """When ``ref`` started, on today's wall clock: now minus how long ago it started, both
    from the boot clock (/proc/uptime and its starttime ticks). psutil's start time (ref's)
    adds the ticks to /proc/stat's btime, whole seconds fixed at boot: after the wall clock
    has been stepped or slewed since boot it is off by as much, and it cannot be compared with
    a time a process stamped, such as a task's exited_at."""
    try:
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        with open(f"/proc/{ref.pid}/stat", "rb") as f:
            stat = f.read()
    except (OSError, ValueError, IndexError):
        return None
    if live_ref(ref.pid, read_boot_time()) != ref:
        return None  # not the process meant any more
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return time.time() - (uptime - float(fields[19]) / _clock_ticks())
