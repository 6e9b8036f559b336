"""Stage records to output: apply's dry run, the Finding assembled from item, decision and
result, and the report's JSON (the same bytes as when the vocabulary was plain strings)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from shimctl.models.findings import Action, Finding, Kind, Mode, Outcome, ProbeResult
from shimctl.reconcile.apply import ActionResult, apply
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision, Planned
from shimctl.reconcile.run import assemble, finding, summarize
from shimctl.settings import Settings

ITEM = Item(
    "default",
    "c1",
    "/s/default/c1",
    age_seconds=12.5,
    shim_pid=7,
    task_pids=(8, 9),
    address="unix:///run/containerd/s/ab",
    api_version=2,
    protocol="ttrpc",
)


def test_dry_run_touches_nothing_and_says_so(tmp_path: Path) -> None:
    settings = Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")
    planned = [
        Planned(ITEM, Decision(Kind.LEAKED, Action.DELETE_TASK, "r")),
        Planned(ITEM, Decision(Kind.RUNNING, Action.KEEP, "r")),
        Planned(ITEM, Decision(Kind.HUNG, Action.REPORT, "r")),
    ]
    results = apply(settings, planned, dry_run=True)
    assert results == [ActionResult(Outcome.DRY_RUN), None, None]
    assert not (tmp_path / "state").exists()  # not even the lock file


def test_finding_is_assembled_from_the_stages() -> None:
    decision = Decision(Kind.LEAKED, Action.DELETE_TASK, "no task", ("from evidence",), False)
    result = ActionResult(Outcome.FAILED, "boom", ("from the action",))
    f = finding(Planned(ITEM, decision), result)
    assert f == Finding(
        kind=Kind.LEAKED,
        namespace="default",
        id="c1",
        path="/s/default/c1",
        reason="no task",
        action=Action.DELETE_TASK,
        shim_pid=7,
        task_pids=[8, 9],
        address="unix:///run/containerd/s/ab",
        api_version=2,
        protocol="ttrpc",
        age_seconds=12.5,
        shutdown_shim=False,
        outcome=Outcome.FAILED,
        error="boom",
        notes=["from evidence", "from the action"],
    )
    untouched = finding(Planned(ITEM, decision), None)
    assert (untouched.outcome, untouched.error, untouched.notes) == (None, None, ["from evidence"])


def test_report_json_is_the_plain_strings_json() -> None:
    planned = [
        Planned(ITEM, Decision(Kind.LEAKED, Action.DELETE_TASK, "r")),
        Planned(
            dataclasses.replace(ITEM, id="c0"), Decision(Kind.STALE_SOCKET, Action.REMOVE, "r")
        ),
    ]
    results = [ActionResult(Outcome.DONE), ActionResult(Outcome.SKIPPED, None, ("gone",))]
    report = summarize(Mode.GC, False, assemble(planned, results), 0.5)
    assert report.counts == {"leaked": 1, "stale-socket": 1}
    assert report.actions == {"delete-task:done": 1, "remove:skipped": 1}
    assert [f.id for f in report.findings] == ["c0", "c1"]  # sorted
    as_enums = json.dumps(dataclasses.asdict(report), sort_keys=True)

    def plain(value: object) -> object:
        if isinstance(value, dict):
            return {str.__str__(k): plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return str.__str__(value) if isinstance(value, str) else value

    assert as_enums == json.dumps(plain(dataclasses.asdict(report)), sort_keys=True)
    assert '"kind": "leaked"' in as_enums and '"outcome": "skipped"' in as_enums
    assert '"command": "gc"' in as_enums
    for word in (Kind.UNKNOWN_RUNTIME, Action.DELETE_DEAD, Outcome.DRY_RUN, Mode.LOAD):
        assert f"{word}" == str(word) == word.value and json.dumps(word) == f'"{word.value}"'
    assert ProbeResult("unresponsive") is ProbeResult.UNRESPONSIVE


def test_errors_count_failed_actions() -> None:
    planned = [Planned(ITEM, Decision(Kind.DEAD, Action.DELETE_DEAD, "r"))] * 3
    results = [ActionResult(Outcome.FAILED, "x"), ActionResult(Outcome.DONE), None]
    assert summarize(Mode.GC, False, assemble(planned, results), 0.1).errors == 1
