"""Evidence: the records list, load and gc decide from, and the reading of one bundle's files.

Read-only: nothing here changes a file or signals a process. walk.py finds the bundles and the
leftovers beside them, probe.py asks each shim, processes.py attaches live shim processes,
stale_sockets.py looks at the socket dir; plan.py decides from the result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from shimctl.errors import NotImplementedByShim, ShimctlError
from shimctl.models.findings import Kind, ProbeResult
from shimctl.node import fs, identifiers, processes
from shimctl.node.bundle import SANDBOX, SHIM_BINARY_PATH, SHIMCTL_STARTED, Bundle
from shimctl.node.runtimes import recorded_binary_problem
from shimctl.node.spec import bundle_annotations, cri_sandbox_of, marks_sandbox
from shimctl.settings import Settings
from shimctl.shim.address import parse_address
from shimctl.shim.bootstrap import Bootstrap

if TYPE_CHECKING:
    from shimctl.records.model import OwnerRecords


@dataclass(frozen=True, slots=True)
class Item:
    """The facts output shows about one thing found (a bundle, a work dir, a process, a
    socket), whatever is decided about it; apply acts from them."""

    namespace: str
    id: str
    path: str
    age_seconds: float | None = None
    shim_pid: int | None = None
    task_pids: tuple[int, ...] = ()
    task_status: str | None = None
    runtime: str | None = None
    address: str | None = None
    api_version: int | None = None
    protocol: str | None = None
    sandbox: str | None = None
    exit_status: int | None = None
    exited_at: float | None = None  # Unix seconds
    # The live shim process seen (PID and start time): only that process is ever signalled.
    shim: processes.ProcessRef | None = None


class Leftover(NamedTuple):
    """Something beside the bundles: a work dir, a hidden dir, a shim process or a socket with
    no bundle, or anything unsafe. `garbage`: provably garbage, so gc may clean it."""

    item: Item
    kind: Kind
    reason: str
    garbage: bool
    # A stale socket whose name is not the one a shim derives from this containerd's address
    # and a namespace/id it knows: it may be another containerd's (the socket dir is shared).
    foreign: bool = False


@dataclass
class BundleEvidence:
    """What one bundle looks like, before any decision. Filled in as the run goes (its files,
    then its shim's answers, then its live process); read-only once collect() returns."""

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
    probe: ProbeResult = ProbeResult.REFUSED
    probe_error: str | None = None
    shim_pid: int | None = None
    has_task: bool = False
    task_pids: list[int] = field(default_factory=list)
    task_status: str | None = None
    exit_status: int | None = None  # a stopped task's, from its shim's State
    exited_at: float | None = None  # Unix seconds
    live_process: processes.ShimProcess | None = None
    derived_address: bool = False  # no connection file: the address the live shim derives
    shimctl_started: bool = False  # `shimctl start` made it: no container record by design

    def spec_says_sandbox(self) -> bool:
        """Does its config.json mark it a CRI pod sandbox? Read only when a decision needs it
        (bundles sharing a shim), so plain bundles cost no JSON parse."""
        if self._spec_says_sandbox is None:
            self._spec_says_sandbox = marks_sandbox(bundle_annotations(self.path), self.id)
        return self._spec_says_sandbox

    def item(self) -> Item:
        boot = self.boot
        return Item(
            namespace=self.namespace,
            id=self.id,
            path=str(self.path),
            age_seconds=round(self.age, 3),
            shim_pid=self.shim_pid,
            task_pids=tuple(self.task_pids),
            task_status=self.task_status,
            runtime=self.runtime,
            address=boot.address if boot else None,
            api_version=boot.version if boot else None,
            protocol=boot.protocol if boot else None,
            sandbox=self.sandbox_of,
            exit_status=self.exit_status,
            exited_at=self.exited_at,
            shim=self.live_process.ref if self.live_process else None,
        )


class Inventory(NamedTuple):
    bundles: list[BundleEvidence]
    leftovers: list[Leftover]  # work dirs, hidden dirs, processes, sockets, unsafe names
    # What containerd knows (reconcile/owner.py); None when not read (hand-built evidence).
    owner: OwnerRecords | None = None


def age_of(path: str | Path, now: float) -> float:
    """Seconds since `path` (not followed) was last modified; 0 if it cannot be seen."""
    try:
        return max(0.0, now - os.lstat(path).st_mtime)
    except OSError:
        return 0.0


def locate(settings: Settings, namespace: str, id: str) -> Bundle:
    """The bundle of `namespace`/`id` under the settings' task state and root dirs."""
    return Bundle.locate(settings.task_state, settings.task_root, namespace, id)


def read_bundle(
    settings: Settings, ns: str, id: str, now: float, runtime_problems: dict[str, str | None]
) -> BundleEvidence:
    """Static evidence from the bundle's files (no sockets, no processes).
    `runtime_problems`: verdicts on shim binaries already checked in this run, by path."""
    bundle = locate(settings, ns, id)
    ev = BundleEvidence(ns, id, bundle.path, age_of(bundle.path, now), entries=None)
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
    # The bundle's age is its creation time: the connection file (written last by a create,
    # never again), else config.json (written first). Not the dir's mtime: a `docker exec`
    # adds files to the bundle dir and would make a years-old bundle look new.
    for name in ("bootstrap.json", "address", "config.json"):
        if name in present and (ev.boot is not None or name == "config.json"):
            ev.age = age_of(bundle.file(name), now)
            break
    ev.shimctl_started = SHIMCTL_STARTED in present
    if SANDBOX in present:
        try:
            ev.sandbox_of = bundle.read_text(SANDBOX)
        except ShimctlError as err:
            # Which group it belongs to is unknown: never judged, never deleted unseen.
            ev.unsafe = f"its sandbox file is unreadable: {err}"
            return ev
    elif (sandbox := cri_sandbox_of(bundle.path, id)) and identifiers.is_valid(sandbox):
        # containerd 1.6/1.7 write no `sandbox` file: the CRI annotations name the pod.
        ev.sandbox_of = sandbox
    try:
        ev.runtime = bundle.read_text(SHIM_BINARY_PATH) if SHIM_BINARY_PATH in present else None
        if ev.runtime is None and ev.sandbox_of is not None:
            # A pod member runs on its sandbox's shim; 2.x writes its binary only there.
            ev.runtime = _sandbox_runtime(settings, ns, ev.sandbox_of)
    except ShimctlError as err:
        ev.runtime_error = str(err)
    if ev.runtime is None:
        ev.runtime_error = ev.runtime_error or "no shim-binary-path"
    else:
        if ev.runtime not in runtime_problems:
            runtime_problems[ev.runtime] = recorded_binary_problem(ev.runtime)
        ev.runtime_error = runtime_problems[ev.runtime]
    return ev


def _sandbox_runtime(settings: Settings, ns: str, sandbox: str) -> str | None:
    """The shim binary the sandbox bundle of a pod member records (not through a link)."""
    owner = locate(settings, ns, sandbox)
    return None if os.path.islink(owner.path) else owner.read_text(SHIM_BINARY_PATH)


def live_container_pid(bundle_dir: str | Path) -> int | None:
    """The container's init process a dead shim left running, from the bundle's `init.pid`
    (the runc shim has runc write it, cmd/containerd-shim-runc-v2/process/init.go): the PID
    if that process lives and started before the file was written (a reused PID did not)."""
    path = f"{bundle_dir}/init.pid"
    try:
        raw = fs.read_small(path, limit=64)
        written = os.lstat(path).st_mtime
        pid = int(raw.strip())
    except (OSError, ShimctlError, ValueError):
        return None
    if pid <= 0:
        return None
    ref = processes.live_ref(pid, processes.read_boot_time())
    # Start times come from clock ticks since boot: allow a second of rounding.
    return pid if ref is not None and ref.create_time <= written + 1.0 else None
