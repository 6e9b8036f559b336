"""list, load and gc: collect the evidence of the node, plan per command, apply (containerd's
startup reconciliation on demand, and a safer garbage collector). Returns a ReconcileReport;
never prints. Apart from ops/start.py and ops/delete.py: these commands import nothing start
and delete need (the shim binary protocol, subprocess, the log fifo drain)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shimctl.errors import FailedPrecondition
from shimctl.faults import checkpoint
from shimctl.models.findings import Finding, Kind, Mode, Outcome, ReconcileReport
from shimctl.models.progress import ProgressFn
from shimctl.node import identifiers, sockets
from shimctl.settings import Settings

if TYPE_CHECKING:
    from shimctl.reconcile.apply import ActionResult
    from shimctl.reconcile.plan import Planned, Policy


class Reconciler:
    def __init__(self, settings: Settings, *, progress: ProgressFn | None = None) -> None:
        self.settings = settings
        # Called as collection and apply go (the console shows a bar on a terminal).
        self.progress = progress

    def list(self) -> ReconcileReport:
        """Inspect and classify everything; change nothing."""
        return self._reconcile(Mode.LIST, dry_run=True)

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
        return self._reconcile(Mode.LOAD, dry_run=dry_run)

    def gc(
        self,
        *,
        dry_run: bool = False,
        min_age: float = 300.0,
        kill_hung: bool = False,
        stop_orphaned: bool = False,
        delete_created: bool = False,
        remove_foreign_sockets: bool = False,
    ) -> ReconcileReport:
        """Clean provable garbage older than `min_age`; safe next to a live containerd."""
        from shimctl.reconcile.plan import Policy

        policy = Policy(min_age, kill_hung, stop_orphaned, delete_created, remove_foreign_sockets)
        return self._reconcile(Mode.GC, dry_run=dry_run, policy=policy)

    def _reconcile(
        self, mode: Mode, *, dry_run: bool, policy: Policy | None = None
    ) -> ReconcileReport:
        from shimctl.reconcile import collect, plan
        from shimctl.reconcile.ownership import OwnerView

        started = time.monotonic()
        s = self.settings
        if s.namespace_given:
            identifiers.validate_namespace(s.namespace)
        inventory = collect.collect(s, progress=self.progress)
        planned = plan.plan_with(inventory, mode, policy or plan.Policy())
        checkpoint(f"{mode}:planned")
        results: Sequence[ActionResult | None] = [None] * len(planned)
        if mode != Mode.LIST:
            from shimctl.reconcile import apply

            results = apply.apply(s, planned, dry_run=dry_run, progress=self.progress)
        findings = assemble(planned, results)
        report = summarize(mode, dry_run, findings, time.monotonic() - started)
        report.owner = OwnerView(inventory.owner).summary()
        return report


def assemble(planned: Sequence[Planned], results: Sequence[ActionResult | None]) -> list[Finding]:
    """The findings output shows: each item's evidence, decision and outcome together."""
    return [finding(p, r) for p, r in zip(planned, results, strict=True)]


def finding(planned: Planned, result: ActionResult | None) -> Finding:
    item, decision = planned
    return Finding(
        kind=decision.kind,
        namespace=item.namespace,
        id=item.id,
        path=item.path,
        reason=decision.reason,
        action=decision.action,
        shim_pid=item.shim_pid,
        task_pids=list(item.task_pids),
        task_status=item.task_status,
        runtime=item.runtime,
        address=item.address,
        api_version=item.api_version,
        protocol=item.protocol,
        age_seconds=item.age_seconds,
        sandbox=item.sandbox,
        shutdown_shim=decision.shutdown_shim,
        owner=decision.owner,
        exit_status=item.exit_status,
        exited_at=item.exited_at,
        outcome=result.outcome if result else None,
        error=result.error if result else None,
        notes=[*decision.notes, *(result.notes if result else ())],
    )


def summarize(
    mode: Mode, dry_run: bool, findings: list[Finding], duration: float
) -> ReconcileReport:
    counts: dict[Kind, int] = {}
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
        errors=sum(1 for f in findings if f.outcome == Outcome.FAILED),
    )
