"""What containerd's records say about one bundle: its owner, its container record, whether
it is a sandbox and whose member it is, and when containerd started. A read-only view over
`OwnerRecords` for the planner; with no records (owner unknown) it answers "unknown" and the
planner decides exactly as it did before records were read.
"""

from __future__ import annotations

from dataclasses import dataclass

from shimctl.models.findings import Owner, OwnerSummary
from shimctl.reconcile.evidence import BundleEvidence
from shimctl.records.model import ContainerRecord, OwnerRecords, Source, TaskRecord

# The label containerd's CRI plugin puts on every container record it makes, naming what the
# container is: "sandbox" for a pod's pause container, "container" for the others
# (internal/cri/store/label; pkg/cri/constants in 1.6/1.7).
CRI_KIND_LABEL = "io.cri-containerd.kind"
CRI_SANDBOX = "sandbox"


@dataclass(frozen=True, slots=True)
class OwnerView:
    records: OwnerRecords | None

    @property
    def known(self) -> bool:
        return self.records is not None and self.records.known

    @property
    def answering(self) -> bool:
        """containerd answered at its address (its API is the source)."""
        return self.records is not None and self.records.source is Source.API

    @property
    def containerd_started_at(self) -> float | None:
        """Unix time containerd's process started (API source only)."""
        r = self.records
        if r is None or r.containerd is None:
            return None
        return r.containerd_started_at or r.containerd.create_time

    def owner_of(self, ev: BundleEvidence) -> Owner:
        if ev.shimctl_started:
            return Owner.SHIMCTL
        if self.records is None or not self.records.known:
            return Owner.UNKNOWN
        ns = self.records.namespace(ev.namespace)
        # The record first: Tasks.List lists the runtime's tasks without looking at the
        # records (services/tasks/local.go at containerd v1.6.20 and v2.1.9, List), so a task
        # whose record a client deleted is still listed, though no client can reach it.
        if ev.id not in ns.containers and ev.id not in ns.sandboxes:
            return Owner.NO_RECORD
        return Owner.TRACKED if ev.id in ns.tasks else Owner.RECORD_ONLY

    def container(self, ev: BundleEvidence) -> ContainerRecord | None:
        if self.records is None:
            return None
        return self.records.namespace(ev.namespace).containers.get(ev.id)

    def task(self, ev: BundleEvidence) -> TaskRecord | None:
        if self.records is None:
            return None
        return self.records.namespace(ev.namespace).tasks.get(ev.id)

    def says_sandbox(self, ev: BundleEvidence) -> bool | None:
        """Do the records say it is a pod sandbox? None: they cannot say (owner unknown, or
        no record of it), and the planner falls back to the bundle's own evidence."""
        if not self.known or self.records is None:
            return None
        ns = self.records.namespace(ev.namespace)
        if ev.id in ns.sandboxes:
            return True
        record = ns.containers.get(ev.id)
        if record is None:
            return None
        return record.labels.get(CRI_KIND_LABEL) == CRI_SANDBOX

    def in_sandbox_store(self, ev: BundleEvidence) -> bool:
        """Is it in containerd's sandbox store (1.7+; what the manager asks at restart)?"""
        r = self.records
        return bool(r and r.sandboxes_known and ev.id in r.namespace(ev.namespace).sandboxes)

    def sandbox_of(self, ev: BundleEvidence) -> str | None:
        """The sandbox its container record names (1.7+), if any."""
        record = self.container(ev)
        return record.sandbox_id or None if record else None

    def describe(self) -> str:
        """Who the owner is, for a reason: "containerd 1.7.24 (pid 123)", or its meta.db."""
        r = self.records
        if r is None or not r.known:
            return "its owner"
        if r.source is Source.METADB:
            return "containerd (stopped; its meta.db has the record)"
        name = f"containerd {r.version}" if r.version else "containerd"
        return f"{name} (pid {r.containerd.pid})" if r.containerd else name

    def summary(self) -> OwnerSummary | None:
        r = self.records
        if r is None:
            return None
        return OwnerSummary(
            source=r.source.value,
            reason=r.reason,
            containerd_pid=r.containerd.pid if r.containerd else None,
            containerd_started_at=self.containerd_started_at,
            version=r.version,
        )
