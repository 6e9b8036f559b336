"""Ask each bundle's shim what it serves (Connect, Pids, State), all at once, and judge the
answers: the answering process must be a shim of that bundle. Fills in BundleEvidence; never
raises for a shim's faults (a fault is evidence: refused or unresponsive)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from shimctl.errors import DeadlineExceeded, NotFound, ShimctlError, Unavailable, Unsafe
from shimctl.models.findings import ProbeResult
from shimctl.models.progress import ProgressFn
from shimctl.node import processes, sockets
from shimctl.reconcile.evidence import BundleEvidence
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap
from shimctl.shim.prober import Prober, Target

Answer = object
"""A decoded answer (ConnectInfo, list of pids, TaskState), raw bytes from the prober, or
the ShimctlError the call ended with."""

Known = dict[int, processes.ShimProcess]
"""The shim processes of the /proc scan made beside the probes, by PID."""

# Answers are taken every few submissions: one epoll_wait then serves several shims, and the
# prober's own cap on open connections (max_open) still bounds what is in flight.
_POLL_EVERY = 8


class Probing:
    """Bundles probed as they are read (shim/prober.py): the first shims answer while the
    next bundles are still being read. Each bundle's log fifo is held open while its shim is
    probed, as containerd's loader does: a shim whose starter died before the shim opened its
    log is blocked in that open, and answers once it can. The raw answers are judged once the
    /proc scan is made."""

    def __init__(self, settings: Settings, total: int, progress: ProgressFn | None) -> None:
        self.total, self.done, self.progress = total, 0, progress
        self.prober = Prober(timeout=settings.timeouts.load, on_done=self._ended)
        self.probed: list[BundleEvidence] = []
        self.fifos: dict[int, int] = {}
        if progress is not None:
            progress("inspect", 0, total)

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress("inspect", self.done, self.total)

    def _ended(self, index: int) -> None:
        fd = self.fifos.pop(index, None)
        if fd is not None:
            os.close(fd)
        self._tick()

    def add(self, ev: BundleEvidence) -> None:
        if ev.boot is None:
            ev.probe, ev.probe_error = ProbeResult.REFUSED, ev.address_error or "no address"
            self._tick()
            return
        fd = open_log_fifo(f"{ev.path}/log")
        index = self.prober.submit(Target(ev.boot.address, ev.namespace, ev.id, ev.boot.version))
        self.probed.append(ev)
        if fd is not None:
            if self.prober.results[index] is None:
                self.fifos[index] = fd
            else:
                os.close(fd)  # ended at once (refused)
        if len(self.probed) % _POLL_EVERY == 0:
            self.prober.poll(0)  # take the answers already there

    def finish(self) -> list[tuple[BundleEvidence, Sequence[Answer]]]:
        try:
            answers = self.prober.finish()
        finally:
            for fd in self.fifos.values():
                os.close(fd)
            self.fifos.clear()
        return list(zip(self.probed, answers, strict=True))


def judge_all(
    settings: Settings,
    answered: list[tuple[BundleEvidence, Sequence[Answer]]],
    known: Known,
) -> None:
    for ev, answers in answered:
        try:
            judge(settings, ev, answers, known=known)
        except ShimctlError as err:
            probe_failed(ev, err)


def probe_failed(ev: BundleEvidence, err: ShimctlError) -> None:
    if isinstance(err, Unavailable):  # refused, no socket, or the connection ended
        ev.probe, ev.probe_error = ProbeResult.REFUSED, str(err)
    elif isinstance(err, DeadlineExceeded):
        ev.probe, ev.probe_error = ProbeResult.UNRESPONSIVE, str(err)
    else:
        # Garbage, protocol errors, unexpected statuses: something is there; not provably dead.
        ev.probe, ev.probe_error = ProbeResult.UNRESPONSIVE, f"{err.kind}: {err}"


def judge(
    settings: Settings, ev: BundleEvidence, answers: Sequence[Answer], *, known: Known
) -> None:
    """Fill ev from the answers to Connect, Pids and State (in that order): the answering
    process must be a shim of this bundle, checked against `known` or looked up. Raises the
    first call error that decides the outcome."""
    from shimctl.shim import task

    def value(answer: Answer, decode: Callable[[bytes], object]) -> object:
        if isinstance(answer, ShimctlError):
            raise answer
        return decode(answer) if isinstance(answer, bytes) else answer

    connect, pids, state = answers
    info = value(connect, task.decode_connect)
    assert isinstance(info, task.ConnectInfo)
    assert ev.boot is not None
    try:
        processes.verify_shim(
            info.shim_pid,
            namespace=ev.namespace,
            address=settings.address,
            bundle=ev.path,
            shared=True,  # a pod's bundles are answered by the sandbox's shim
            known=known,
        )
    except Unsafe as err:
        if _shim_exited_meanwhile(ev.boot.address):
            # It answered, then exited (a concurrent delete): dead, re-checked later.
            ev.probe, ev.probe_error = ProbeResult.REFUSED, f"the shim exited while probed ({err})"
            return
        ev.unsafe = f"its address leads to a shim that is not its own: {err}"
        ev.probe = ProbeResult.ANSWERED
        return
    ev.shim_pid = info.shim_pid or None
    try:
        task_pids = value(pids, task.decode_pids)
        assert isinstance(task_pids, list)
        ev.task_pids = task_pids
        ev.has_task = True
        task_state = value(state, task.decode_state)
        assert isinstance(task_state, task.TaskState)
        ev.task_status = task_state.status
        if task_state.status == "stopped":
            ev.exit_status = task_state.exit_status
            ev.exited_at = task_state.exited_at.timestamp() if task_state.exited_at else None
    except NotFound:
        ev.has_task = bool(ev.task_pids)
    ev.probe = ProbeResult.ANSWERED


def probe_derived(settings: Settings, ev: BundleEvidence, known: Known) -> None:
    """Probe a bundle that has no connection file at the address its live shim derives:
    find the task API version the shim speaks, then Connect, Pids and State one after another
    (each with the load timeout). Fills ev in place; never raises for shim faults."""
    from shimctl.shim.task import TaskClient

    assert ev.boot is not None
    timeout = settings.timeouts.load
    log_fd = open_log_fifo(f"{ev.path}/log")
    try:
        with TaskClient.connect(ev.boot.address, ev.namespace, timeout=timeout) as client:
            client.negotiate(ev.id, timeout=timeout)
            ev.boot = Bootstrap(address=ev.boot.address, version=client.api_version)
            answers: list[Answer] = []
            for call in (client.connect_info, client.pids, client.state):
                try:
                    answers.append(call(ev.id, timeout=timeout))
                except ShimctlError as err:
                    answers.append(err)  # after a broken call the rest fail at once
            judge(settings, ev, answers, known=known)
    except ShimctlError as err:
        probe_failed(ev, err)
    finally:
        if log_fd is not None:
            os.close(log_fd)


def _shim_exited_meanwhile(address: str) -> bool:
    """True when nothing accepts on `address` any more: the process that answered is gone."""
    return sockets.address_state(address) not in (None, sockets.SocketState.LISTENING)


def open_log_fifo(path: str | Path) -> int | None:
    """Open an existing `log` FIFO read-write, non-blocking; None if it is anything else."""
    try:
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            return None
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
