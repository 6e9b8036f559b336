"""Collect the evidence of a node: walk STATE/ROOT, read each bundle and probe its shim as it
is read, scan /proc and the socket dir meanwhile, then judge the answers and attach live
processes; containerd's records are read meanwhile on a third thread. Read-only: nothing here
changes a file or signals a process."""

from __future__ import annotations

import threading
import time

from shimctl.errors import ShimctlError
from shimctl.models.progress import ProgressFn
from shimctl.node import processes
from shimctl.node.runtimes import recorded_binary_problem, resolve_runtime_path
from shimctl.reconcile.evidence import BundleEvidence, Inventory, Leftover, read_bundle
from shimctl.reconcile.owner import OwnerQuery
from shimctl.reconcile.probe import Probing, judge_all
from shimctl.reconcile.processes import attach_processes, orphan_processes
from shimctl.reconcile.runc_state import orphan_runc_states
from shimctl.reconcile.stale_sockets import prove_with_records, stale_sockets
from shimctl.reconcile.walk import namespaces, walk
from shimctl.records.model import OwnerRecords
from shimctl.settings import Settings


def collect(settings: Settings, *, progress: ProgressFn | None = None) -> Inventory:
    """Walk and probe everything in scope."""
    now = time.time()
    scope = namespaces(settings)
    owner = OwnerQuery(settings)  # overlaps the walk and the probes
    found = walk(settings, scope, now)
    bundles: list[BundleEvidence] = []
    runtime_problems: dict[str, str | None] = {}  # most bundles share one shim binary
    scans = _Scans(settings, now)  # the /proc scan overlaps the reads and the probes
    probing = Probing(settings, len(found.bundle_dirs), progress)
    try:
        for ns, name in found.bundle_dirs:
            ev = read_bundle(settings, ns, name, now, runtime_problems)
            bundles.append(ev)
            probing.add(ev)
    finally:
        scans.bundles_read(bundles)  # also on an error: the scan thread then ends
    answered = probing.finish()
    shims, sockets = scans.result()
    known = {shim.ref.pid: shim for shim in shims}
    judge_all(settings, answered, known)
    attach_processes(settings, bundles, known)
    orphans = orphan_processes(settings, bundles, scope, now, shims)
    orphans += orphan_runc_states(settings, bundles, scope, now)
    records = owner.result()
    runtime_from_records(settings, bundles, records)
    sockets = prove_with_records(settings, sockets, records)
    return Inventory(bundles, found.leftovers + orphans + sockets, records)


def runtime_from_records(
    settings: Settings, bundles: list[BundleEvidence], records: OwnerRecords
) -> None:
    """A bundle with no shim-binary-path (written by containerd 1.6+, but not for every
    bundle: 2.x container bundles of a pod have none) takes its runtime from its container
    record, where containerd's manager takes it at restart (core/runtime/v2/shim_load.go,
    loadShim: containers.Get, then the runtime name resolved like any other)."""
    if not records.known:
        return
    for ev in bundles:
        if ev.runtime is not None or ev.entries is None or ev.unsafe:
            continue
        record = records.namespace(ev.namespace).containers.get(ev.id)
        if record is None or not record.runtime:
            continue
        try:
            path = resolve_runtime_path(record.runtime, containerd_binary=settings.publish_binary)
        except ShimctlError as err:
            ev.runtime_error = (
                f"no shim-binary-path; its record's runtime {record.runtime!r}: {err}"
            )
            continue
        ev.runtime = path
        ev.runtime_error = recorded_binary_problem(path)


class _Scans(threading.Thread):
    """The /proc scan and the stale-socket scan, on a second thread while the prober waits
    for the shims' answers. One scan serves three purposes: who answered, live processes of
    silent bundles, and orphans. A process that starts or exits meanwhile is judged
    conservatively (an answering PID the scan missed is looked up; a live one counts as
    live), and every action re-checks under the state lock anyway."""

    def __init__(self, settings: Settings, now: float) -> None:
        super().__init__(name="shimctl-scan", daemon=True)
        self.settings, self.now = settings, now
        self.bundles: list[BundleEvidence] = []
        self._read = threading.Event()
        self.shims: list[processes.ShimProcess] = []
        self.sockets: list[Leftover] = []
        self.error: BaseException | None = None
        self.start()

    def bundles_read(self, bundles: list[BundleEvidence]) -> None:
        """Every bundle is read: the sockets they name are known now."""
        self.bundles = bundles
        self._read.set()

    def run(self) -> None:
        try:
            self.shims = processes.find_shims(self.settings.address)
            if not self.settings.namespace_given:
                # The socket dir is shared by all namespaces; only a node-wide run looks at it.
                self._read.wait()
                self.sockets = stale_sockets(self.settings, self.bundles, self.now)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = err

    def result(self) -> tuple[list[processes.ShimProcess], list[Leftover]]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.shims, self.sockets
