"""Inspect a node: walk STATE/ROOT, probe every shim concurrently, classify each item.

Read-only: nothing here changes a file or signals a process. `plan` turns the evidence into
Findings with the action each command (list, load, gc) would take.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from shimctl.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    NotFound,
    NotImplementedByShim,
    ShimctlError,
    Unavailable,
    Unsafe,
)
from shimctl.models.findings import Action, Finding, Kind
from shimctl.models.progress import ProgressFn
from shimctl.node import fs, identifiers, processes, sockets
from shimctl.node.bundle import SANDBOX, SHIM_BINARY_PATH, Bundle
from shimctl.node.runtimes import recorded_binary_problem
from shimctl.node.spec import bundle_annotations, marks_sandbox, shim_group
from shimctl.settings import Settings
from shimctl.shim.address import first_unix_path, parse_address, unix_address
from shimctl.shim.bootstrap import Bootstrap
from shimctl.shim.prober import Prober, Target

# Probe outcomes.
ANSWERED = "answered"
REFUSED = "refused"  # nothing listens (or no socket, or no address)
UNRESPONSIVE = "unresponsive"  # connects but does not answer in time, or answers garbage


@dataclass
class BundleEvidence:
    """What one bundle looks like, before any decision."""

    namespace: str
    id: str
    path: Path
    age: float
    entries: list[str] | None  # None: unreadable
    unsafe: str | None = None
    boot: Bootstrap | None = None
    address_error: str | None = None
    runtime: str | None = None
    runtime_error: str | None = None
    sandbox_of: str | None = None  # content of its `sandbox` file
    _spec_says_sandbox: bool | None = None
    probe: str = REFUSED
    probe_error: str | None = None
    shim_pid: int | None = None
    has_task: bool = False
    task_pids: list[int] = field(default_factory=list)
    task_status: str | None = None
    live_process: processes.ShimProcess | None = None
    derived_address: bool = False  # no connection file: the address the live shim derives

    def spec_says_sandbox(self) -> bool:
        """Does its config.json mark it a CRI pod sandbox? Read only when a decision needs it
        (bundles sharing a shim), so plain bundles cost no JSON parse."""
        if self._spec_says_sandbox is None:
            self._spec_says_sandbox = marks_sandbox(bundle_annotations(self.path), self.id)
        return self._spec_says_sandbox


class Inventory(NamedTuple):
    bundles: list[BundleEvidence]
    others: list[Finding]  # work dirs, hidden dirs, processes, sockets, unsafe names


def _age(path: str | Path, now: float) -> float:
    try:
        return max(0.0, now - os.lstat(path).st_mtime)
    except OSError:
        return 0.0


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    """Entries of `path`, best effort: a missing or unreadable dir has none (callers that must
    tell the difference check `_unreadable` first)."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def _unreadable(path: Path) -> str | None:
    """Why the directory `path` cannot be listed, or None (also when it does not exist)."""
    try:
        with os.scandir(path):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        return err.strerror or str(err)


def namespaces(settings: Settings) -> list[str]:
    """Namespaces to cover: the one given with -n, else every plain dir in STATE and ROOT."""
    if settings.namespace_given:
        return [settings.namespace]
    names: set[str] = set()
    for top in (settings.task_state, settings.task_root):
        why = _unreadable(top)
        if why is not None:
            raise FailedPrecondition(
                f"cannot read {top}: {why}",
                hint="run shimctl as root, or name one namespace with -n",
            )
        for entry in _subdirs(top):
            plain_or_link = entry.is_dir(follow_symlinks=False) or entry.is_symlink()
            if plain_or_link and not entry.name.startswith("."):
                names.add(entry.name)
    return sorted(names)


def read_bundle(
    settings: Settings, ns: str, id: str, now: float, runtime_problems: dict[str, str | None]
) -> BundleEvidence:
    """Static evidence from the bundle's files (no sockets, no processes).
    `runtime_problems`: verdicts on shim binaries already checked in this run, by path."""
    bundle = Bundle.locate(settings.task_state, settings.task_root, ns, id)
    ev = BundleEvidence(ns, id, bundle.path, _age(bundle.path, now), entries=None)
    try:
        ev.entries = sorted(os.listdir(bundle.path))
    except OSError as err:
        ev.unsafe = f"bundle dir is unreadable ({err.strerror}): not deleted unseen"
        return ev
    if not identifiers.is_valid(id):
        ev.unsafe = f"bundle name {id!r} is not a valid containerd identifier"
        return ev
    work = bundle.work_target()
    if work is not None and not bundle.work_is_safe(work):
        ev.unsafe = f"`work` link does not point at its own work dir: {work}"
        return ev
    if os.path.islink(rootfs := bundle.file("rootfs")):
        ev.unsafe = f"rootfs is a symlink to {os.readlink(rootfs)}"
        return ev
    present = set(ev.entries)
    try:
        ev.boot = bundle.connection(present)
        if ev.boot is not None:
            parse_address(ev.boot.address)  # one that cannot be dialled is no address at all
    except NotImplementedByShim as err:
        # A newer shim generation than shimctl knows: never judged dead, never deleted.
        ev.unsafe = f"{err} (shimctl does not know this shim generation; upgrade shimctl)"
        return ev
    except ShimctlError as err:
        ev.boot, ev.address_error = None, str(err)
    if ev.boot is not None:
        # The connection file is written last by a create: its age is the bundle's.
        for name in ("bootstrap.json", "address"):
            if name in present:
                ev.age = min(ev.age, _age(bundle.file(name), now))
                break
    if SANDBOX in present:
        try:
            ev.sandbox_of = bundle.read_text(SANDBOX)
        except ShimctlError as err:
            # Which group it belongs to is unknown: never judged, never deleted unseen.
            ev.unsafe = f"its sandbox file is unreadable: {err}"
            return ev
    try:
        ev.runtime = bundle.read_text(SHIM_BINARY_PATH) if SHIM_BINARY_PATH in present else None
    except ShimctlError as err:
        ev.runtime_error = str(err)
    if ev.runtime is None:
        ev.runtime_error = ev.runtime_error or "no shim-binary-path"
    else:
        if ev.runtime not in runtime_problems:
            runtime_problems[ev.runtime] = recorded_binary_problem(ev.runtime)
        ev.runtime_error = runtime_problems[ev.runtime]
    return ev


def _probe_derived(
    settings: Settings, ev: BundleEvidence, known: dict[int, processes.ShimProcess]
) -> None:
    """Probe a bundle that has no connection file at the address its live shim derives:
    find the task API version the shim speaks, then Connect, Pids and State one after another
    (each with the load timeout). Fills ev in place; never raises for shim faults."""
    from shimctl.shim.task import TaskClient

    assert ev.boot is not None
    timeout = settings.timeouts.load
    log_fd = _open_log_fifo(f"{ev.path}/log")
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
            _judge(settings, ev, answers, known=known)
    except ShimctlError as err:
        _probe_failed(ev, err)
    finally:
        if log_fd is not None:
            os.close(log_fd)


Answer = object
"""A decoded answer (ConnectInfo, list of pids, TaskState), raw bytes from the prober, or
the ShimctlError the call ended with."""


def _probe_failed(ev: BundleEvidence, err: ShimctlError) -> None:
    if isinstance(err, Unavailable):  # refused, no socket, or the connection ended
        ev.probe, ev.probe_error = REFUSED, str(err)
    elif isinstance(err, DeadlineExceeded):
        ev.probe, ev.probe_error = UNRESPONSIVE, str(err)
    else:
        # Garbage, protocol errors, unexpected statuses: something is there; not provably dead.
        ev.probe, ev.probe_error = UNRESPONSIVE, f"{err.kind}: {err}"


def _judge(
    settings: Settings,
    ev: BundleEvidence,
    answers: Sequence[Answer],
    *,
    known: dict[int, processes.ShimProcess],
) -> None:
    """Fill ev from the answers to Connect, Pids and State (in that order): the answering
    process must be a shim of this bundle, checked against `known` (the /proc scan made
    beside the probes) or looked up. Raises the first call error that decides the outcome."""
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
            known=known,
        )
    except Unsafe as err:
        if _shim_exited_meanwhile(ev.boot.address):
            # It answered, then exited (a concurrent delete): dead, re-checked later.
            ev.probe, ev.probe_error = REFUSED, f"the shim exited while probed ({err})"
            return
        ev.unsafe = f"its address leads to a shim that is not its own: {err}"
        ev.probe = ANSWERED
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
    except NotFound:
        ev.has_task = bool(ev.task_pids)
    ev.probe = ANSWERED


class _Probing:
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
            ev.probe, ev.probe_error = REFUSED, ev.address_error or "no address"
            self._tick()
            return
        fd = _open_log_fifo(f"{ev.path}/log")
        index = self.prober.submit(Target(ev.boot.address, ev.namespace, ev.id, ev.boot.version))
        self.probed.append(ev)
        if fd is not None:
            if self.prober.results[index] is None:
                self.fifos[index] = fd
            else:
                os.close(fd)  # ended at once (refused)
        self.prober.poll(0)  # take the answers already there

    def finish(self) -> list[tuple[BundleEvidence, Sequence[Answer]]]:
        try:
            answers = self.prober.finish()
        finally:
            for fd in self.fifos.values():
                os.close(fd)
            self.fifos.clear()
        return list(zip(self.probed, answers, strict=True))


def _shim_exited_meanwhile(address: str) -> bool:
    """True when nothing accepts on `address` any more: the process that answered is gone."""
    return sockets.address_state(address) not in (None, sockets.SocketState.LISTENING)


def _open_log_fifo(path: str | Path) -> int | None:
    """Open an existing `log` FIFO read-write, non-blocking; None if it is anything else."""
    try:
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            return None
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None


def collect(settings: Settings, *, progress: ProgressFn | None = None) -> Inventory:
    """Walk and probe everything in scope."""
    now = time.time()
    scope = namespaces(settings)
    bundles: list[BundleEvidence] = []
    others: list[Finding] = []
    todo: list[tuple[str, str]] = []  # (namespace, id) of every bundle dir
    for ns in scope:
        ns_state = settings.task_state / ns
        ns_root = settings.task_root / ns
        linked = [d for d in (ns_state, ns_root) if os.path.islink(d)]
        if linked:
            others.append(
                Finding(
                    Kind.UNSAFE,
                    ns,
                    "",
                    str(linked[0]),
                    f"namespace dir {linked[0]} is a symlink; not followed, skipped",
                    Action.REPORT,
                )
            )
            continue
        if not identifiers.is_valid(ns):
            others.append(
                Finding(
                    Kind.UNSAFE,
                    ns,
                    "",
                    str(ns_state),
                    f"namespace dir {ns!r} is not a valid identifier; skipped",
                    Action.REPORT,
                )
            )
            continue
        unreadable = [(d, why) for d in (ns_state, ns_root) if (why := _unreadable(d))]
        if unreadable:
            where, why = unreadable[0]
            others.append(
                Finding(
                    Kind.UNSAFE,
                    ns,
                    "",
                    str(where),
                    f"namespace dir {where} is unreadable ({why}); skipped",
                    Action.REPORT,
                )
            )
            continue
        names: set[str] = set()
        for entry in _subdirs(ns_state):
            if entry.is_symlink():
                others.append(
                    Finding(
                        Kind.UNSAFE,
                        ns,
                        entry.name,
                        entry.path,
                        f"bundle is a symlink to {os.readlink(entry.path)}; not followed",
                        Action.REPORT,
                    )
                )
                names.add(entry.name)
                continue
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith("."):
                others.append(_hidden(ns, entry.name, Path(entry.path), now))
                continue
            names.add(entry.name)
            todo.append((ns, entry.name))
        for entry in _subdirs(ns_root):
            if entry.name in names:
                continue
            path = Path(entry.path)
            if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                others.append(_hidden(ns, entry.name, path, now))
                continue
            if not identifiers.is_valid(entry.name):
                others.append(_invalid_name(ns, entry.name, path, "work dir"))
                continue
            others.append(
                Finding(
                    Kind.ORPHAN_WORKDIR,
                    ns,
                    entry.name,
                    entry.path,
                    "work dir with no bundle",
                    Action.REMOVE,
                    age_seconds=_age(path, now),
                )
            )

    runtime_problems: dict[str, str | None] = {}  # most bundles share one shim binary
    probing = _Probing(settings, len(todo), progress)
    for ns, name in todo:
        ev = read_bundle(settings, ns, name, now, runtime_problems)
        bundles.append(ev)
        probing.add(ev)
    scans = _Scans(settings, bundles, now)
    answered = probing.finish()
    shims, stale_sockets = scans.result()
    known = {shim.ref.pid: shim for shim in shims}
    for ev, answers in answered:
        try:
            _judge(settings, ev, answers, known=known)
        except ShimctlError as err:
            _probe_failed(ev, err)
    _attach_processes(settings, bundles, known)
    others += _orphan_processes(settings, bundles, scope, now, shims)
    return Inventory(bundles, others + stale_sockets)


class _Scans(threading.Thread):
    """The /proc scan and the stale-socket scan, on a second thread while the prober waits
    for the shims' answers. One scan serves three purposes: who answered, live processes of
    silent bundles, and orphans. A process that starts or exits meanwhile is judged
    conservatively (an answering PID the scan missed is looked up; a live one counts as
    live), and every action re-checks under the state lock anyway."""

    def __init__(self, settings: Settings, bundles: list[BundleEvidence], now: float) -> None:
        super().__init__(name="shimctl-scan", daemon=True)
        self.settings, self.bundles, self.now = settings, bundles, now
        self.shims: list[processes.ShimProcess] = []
        self.sockets: list[Finding] = []
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.shims = processes.find_shims(self.settings.address)
            if not self.settings.namespace_given:
                # The socket dir is shared by all namespaces; only a node-wide run looks at it.
                self.sockets = _stale_sockets(self.settings, self.bundles, self.now)
        except BaseException as err:  # re-raised in the caller's thread
            self.error = err

    def result(self) -> tuple[list[processes.ShimProcess], list[Finding]]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.shims, self.sockets


def _invalid_name(ns: str, name: str, path: Path, what: str) -> Finding:
    return Finding(
        Kind.UNSAFE,
        ns,
        name,
        str(path),
        f"{what} name {name!r} is not a valid containerd identifier: not made by containerd "
        "or shimctl; left alone",
        Action.REPORT,
    )


def _hidden(ns: str, name: str, path: Path, now: float) -> Finding:
    if not identifiers.is_valid(name[1:]):
        # Only `.<id>` is an atomic delete's leftover; `...` or `.-x` is something else.
        return _invalid_name(ns, name, path, "hidden dir")
    return Finding(
        Kind.STALE_HIDDEN,
        ns,
        name,
        str(path),
        "left by an interrupted atomic delete",
        Action.REMOVE,
        age_seconds=_age(path, now),
    )


def _attach_processes(
    settings: Settings, bundles: list[BundleEvidence], known: dict[int, processes.ShimProcess]
) -> None:
    """For bundles whose shim did not answer, find a live shim process that belongs to them:
    a bundle with a live process is never treated as dead. A bundle with no connection file
    (containerd 2.x writes bootstrap.json only after `start` returns, so a crash in between
    leaves none) is probed again at the address its live shim derives from its argv."""
    silent = [ev for ev in bundles if ev.probe != ANSWERED]
    for ev in silent:
        for shim in known.values():
            mine = shim.runs_in(ev.namespace, ev.path) or (
                shim.namespace == ev.namespace and shim.id == ev.id and ev.sandbox_of is None
            )
            if mine and processes.still_alive(shim.ref):  # the scan ran beside the probes
                ev.live_process = shim
                ev.shim_pid = shim.ref.pid
                break
    lost = [ev for ev in silent if ev.boot is None and ev.live_process is not None]
    for ev in lost:
        assert ev.live_process is not None
        ev.boot = Bootstrap(address=shim_address(settings, ev.live_process))
        ev.derived_address = True
    if lost:
        # Rare (a create interrupted after the shim started): one thread each, so hung ones
        # cost one timeout together.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(64, len(lost))) as threads:
            list(threads.map(lambda ev: _probe_derived(settings, ev, known), lost))


def shim_address(settings: Settings, shim: processes.ShimProcess) -> str:
    """The socket address a runc-style shim derives for itself: from containerd's address,
    its namespace and its grouping key (its bundle's group annotation, else its id)."""
    key = shim_group(bundle_annotations(shim.cwd), shim.id) if shim.cwd else shim.id
    return sockets.derive_address(settings.address, shim.namespace, key, settings.socket_dir)


def _orphan_processes(
    settings: Settings,
    bundles: list[BundleEvidence],
    scope: list[str],
    now: float,
    shims: list[processes.ShimProcess],
) -> list[Finding]:
    """Shim processes of this containerd address whose bundle is gone."""
    known_pids = {ev.shim_pid for ev in bundles if ev.shim_pid}
    found: list[Finding] = []
    for shim in shims:
        if shim.ref.pid in known_pids or shim.namespace not in scope:
            continue
        if not identifiers.is_valid(shim.namespace) or not identifiers.is_valid(shim.id):
            continue
        bundle = Bundle.locate(settings.task_state, settings.task_root, shim.namespace, shim.id)
        if bundle.exists() or (shim.cwd is not None and os.path.isdir(shim.cwd)):
            continue
        address = sockets.derive_address(
            settings.address, shim.namespace, shim.id, settings.socket_dir
        )
        finding = Finding(
            Kind.ORPHAN_PROCESS,
            shim.namespace,
            shim.id,
            str(bundle.path),
            "shim process whose bundle is gone",
            Action.REPORT,
            shim_pid=shim.ref.pid,
            address=address,
            age_seconds=max(0.0, now - shim.ref.create_time),
        )
        _probe_orphan(settings, finding, shim)
        found.append(finding)
    return found


def _probe_orphan(settings: Settings, finding: Finding, shim: processes.ShimProcess) -> None:
    """Prove the orphan answers on the socket derived from its argv, and see if it has a task:
    only a verified shim with no task may be shut down."""
    from shimctl.shim.task import TaskClient

    assert finding.address is not None
    timeout = settings.timeouts.load
    try:
        with TaskClient.connect(finding.address, shim.namespace, timeout=timeout) as client:
            info = client.negotiate(shim.id, timeout=timeout)
            finding.api_version, finding.protocol = client.api_version, "ttrpc"
            if info.shim_pid != shim.ref.pid:
                finding.reason += f"; its socket is served by pid {info.shim_pid}, not by it"
                return
            try:
                finding.task_pids = client.pids(shim.id, timeout=timeout)
                finding.reason += "; it still has a task"
                return
            except NotFound:
                pass
    except ShimctlError as err:
        finding.reason += f"; it does not answer on {finding.address}: {err}"
        return
    finding.reason += "; answers, no task"
    finding.action = Action.SHUTDOWN


def _stale_sockets(settings: Settings, bundles: list[BundleEvidence], now: float) -> list[Finding]:
    """Sockets in the shim socket dir that refuse connections and that no bundle names."""
    referenced = {p for ev in bundles if ev.boot and (p := sockets.socket_file(ev.boot.address))}
    candidates = []
    for entry in _subdirs(settings.socket_dir):
        if entry.path in referenced or len(entry.name) != 64:
            continue
        # Anything but a socket that refuses (a file, a live socket) is not stale.
        if sockets.probe(entry.path) is sockets.SocketState.REFUSED:
            candidates.append(entry)
    if candidates:
        # Also spare sockets named by bundles the evidence could not parse (junk, unsafe).
        referenced |= _all_addresses(settings)
    found = []
    for entry in candidates:
        if entry.path not in referenced:
            found.append(
                Finding(
                    Kind.STALE_SOCKET,
                    "",
                    entry.name,
                    entry.path,
                    "socket refuses connections and no bundle names it",
                    Action.REMOVE,
                    address=unix_address(entry.path),
                    age_seconds=_age(entry.path, now),
                )
            )
    return found


def _all_addresses(settings: Settings) -> set[str]:
    """Socket paths named by any bundle in any namespace (also outside the -n scope)."""
    paths: set[str] = set()
    for ns_entry in _subdirs(settings.task_state):
        if not ns_entry.is_dir(follow_symlinks=False):
            continue
        for entry in _subdirs(Path(ns_entry.path)):
            if not entry.is_dir(follow_symlinks=False):
                continue
            for name in ("address", "bootstrap.json"):
                try:
                    # Bounded, no-follow, non-blocking: a FIFO, a link to /dev/zero or a huge
                    # file here must neither hang nor exhaust the run.
                    raw = fs.read_small(Path(entry.path) / name)[:4096]
                except (OSError, ShimctlError):
                    continue
                if (path := first_unix_path(raw.decode("utf-8", "replace"))) is not None:
                    paths.add(path)
    return paths
