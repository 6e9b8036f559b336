"""list, load and gc: inspect the node, plan per command, apply (containerd's startup
reconciliation on demand, and a safer garbage collector). Returns a ReconcileReport; never
prints. Separate from manager.py so these commands import nothing start and delete need
(the shim binary protocol, subprocess, the log fifo drain)."""

from __future__ import annotations

import time

from shimctl.errors import FailedPrecondition
from shimctl.faults import checkpoint
from shimctl.models.findings import Finding, ReconcileReport
from shimctl.models.progress import ProgressFn
from shimctl.node import identifiers, sockets
from shimctl.settings import Settings


class Reconciler:
    def __init__(self, settings: Settings, *, progress: ProgressFn | None = None) -> None:
        self.settings = settings
        # Called as inspect and apply go (render.py shows a bar on a terminal).
        self.progress = progress

    def list(self) -> ReconcileReport:
        """Inspect and classify everything; change nothing."""
        return self._reconcile("list", dry_run=True)

    def load(self, *, dry_run: bool = False, force: bool = False) -> ReconcileReport:
        """containerd's startup reconciliation, run on demand. Refused while a containerd
        answers at --address (it owns the state then) unless forced."""
        s = self.settings
        listening = sockets.SocketState.LISTENING
        if not (force or dry_run) and sockets.probe_address(s.address) is listening:
            raise FailedPrecondition(
                f"containerd answers at {s.address}: it owns this state",
                hint="use `shimctl gc` next to a live containerd, or pass --force",
            )
        return self._reconcile("load", dry_run=dry_run)

    def gc(
        self, *, dry_run: bool = False, min_age: float = 300.0, kill_hung: bool = False
    ) -> ReconcileReport:
        """Clean provable garbage older than `min_age`; safe next to a live containerd."""
        return self._reconcile("gc", dry_run=dry_run, min_age=min_age, kill_hung=kill_hung)

    def _reconcile(
        self, mode: str, *, dry_run: bool, min_age: float = 0.0, kill_hung: bool = False
    ) -> ReconcileReport:
        from shimctl.reconcile import evidence, plan

        started = time.monotonic()
        s = self.settings
        if s.namespace_given:
            identifiers.validate_namespace(s.namespace)
        inventory = evidence.collect(s, progress=self.progress)
        findings = plan.plan(inventory, mode=mode, min_age=min_age, kill_hung=kill_hung)
        checkpoint(f"{mode}:planned")
        if mode != "list":
            from shimctl.reconcile import apply

            apply.apply(s, findings, dry_run=dry_run, progress=self.progress)
        return summarize(mode, dry_run, findings, time.monotonic() - started)


def summarize(
    mode: str, dry_run: bool, findings: list[Finding], duration: float
) -> ReconcileReport:
    counts: dict[str, int] = {}
    actions: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
        if f.outcome is not None:
            key = f"{f.action}:{f.outcome}"
            actions[key] = actions.get(key, 0) + 1
    return ReconcileReport(
        command=mode,
        dry_run=dry_run,
        findings=sorted(findings, key=lambda f: (f.namespace, f.id, f.kind)),
        duration_seconds=round(duration, 3),
        counts=counts,
        actions=actions,
        errors=sum(1 for f in findings if f.outcome == "failed"),
    )
