"""`gc --metrics-file`: Prometheus text for node_exporter's textfile collector, validated with
prometheus_client's parser; atomic; written on partial and total failure."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shimctl import __version__
from shimctl.errors import ExitCode
from shimctl.models.findings import (
    Action,
    Finding,
    Kind,
    Mode,
    Outcome,
    OwnerSummary,
    ReconcileReport,
)
from shimctl.ops import metrics
from shimctl.reconcile.run import summarize
from tests.support.helpers import Node, run_cli

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _report(*, failed: bool = False) -> ReconcileReport:
    findings = [
        Finding(
            Kind.LEAKED,
            "default",
            "c1",
            "/s/default/c1",
            "r",
            Action.DELETE_TASK,
            outcome=Outcome.DONE,
        ),
        Finding(Kind.RUNNING, "default", "c2", "/s/default/c2", "r"),
        Finding(
            Kind.DEAD, "k8s.io", "p1", "/s/k8s.io/p1", "r", Action.DELETE_DEAD, outcome=Outcome.DONE
        ),
        Finding(
            Kind.STALE_SOCKET,
            "",
            "ab",
            "/run/containerd/s/ab",
            "r",
            Action.REMOVE,
            outcome=Outcome.FAILED,
        )
        if failed
        else Finding(Kind.STALE_SOCKET, "", "ab", "/run/containerd/s/ab", "r", Action.REMOVE),
    ]
    return summarize(Mode.GC, False, findings, 1.25)


def test_exposition_parses_and_counts() -> None:
    rep = _report()
    samples = parse(metrics.exposition(rep, now=1000.5, version="9.9"))
    assert value(samples, "shimctl_info", version="9.9") == 1
    assert value(samples, "shimctl_gc_findings", kind="leaked", namespace="default") == 1
    assert value(samples, "shimctl_gc_findings", kind="running", namespace="default") == 1
    assert value(samples, "shimctl_gc_findings", kind="dead", namespace="k8s.io") == 1
    assert value(samples, "shimctl_gc_findings", kind="stale-socket", namespace="") == 1
    # Every kind per namespace seen, zeros included.
    for kind in Kind:
        assert ("shimctl_gc_findings", (("kind", kind), ("namespace", "k8s.io"))) in samples
    assert value(samples, "shimctl_gc_findings", kind="hung", namespace="default") == 0
    assert value(samples, "shimctl_gc_actions", action="delete-task", outcome="done") == 1
    assert value(samples, "shimctl_gc_actions", action="delete-dead", outcome="done") == 1
    assert value(samples, "shimctl_gc_errors") == 0
    assert value(samples, "shimctl_gc_success") == 1
    assert value(samples, "shimctl_gc_dry_run") == 0
    assert value(samples, "shimctl_gc_duration_seconds") == 1.25
    assert value(samples, "shimctl_gc_last_run_timestamp_seconds") == 1000.5
    assert value(samples, "shimctl_gc_last_success_timestamp_seconds") == 1000.5


def test_failed_run_keeps_previous_success() -> None:
    rep = _report(failed=True)
    text = metrics.exposition(rep, now=2000, version="1", previous_success=1000)
    samples = parse(text)
    assert value(samples, "shimctl_gc_errors") == 1
    assert value(samples, "shimctl_gc_success") == 0
    assert value(samples, "shimctl_gc_actions", action="remove", outcome="failed") == 1
    assert value(samples, "shimctl_gc_last_run_timestamp_seconds") == 2000
    assert value(samples, "shimctl_gc_last_success_timestamp_seconds") == 1000
    # Never succeeded: no last-success sample at all (not a misleading 0).
    never = parse(metrics.exposition(None, now=3000, version="1", run_error="boom"))
    assert value(never, "shimctl_gc_errors") == 1
    assert value(never, "shimctl_gc_success") == 0
    assert not any(name == "shimctl_gc_last_success_timestamp_seconds" for name, _ in never)


def test_leaks_and_consecutive_leaking_runs(tmp_path: Path) -> None:
    rep = _report()  # delete-task, delete-dead, remove: three to clean; running: kept
    samples = parse(metrics.exposition(rep, now=1, version="1", previous_leaking_runs=2))
    assert value(samples, "shimctl_gc_leaks") == 3
    assert value(samples, "shimctl_gc_leaking_runs") == 3
    # Reported items (a hung shim without --kill-hung, an orphaned task) are no leaks: found
    # again each run by design, they have their own findings.
    reported = [
        Finding(Kind.HUNG, "default", "h", "/s/default/h", "r", Action.REPORT),
        Finding(Kind.ORPHANED, "default", "o", "/s/default/o", "r", Action.REPORT),
        Finding(Kind.RUNNING, "default", "c", "/s/default/c", "r"),
    ]
    quiet = summarize(Mode.GC, False, reported, 0.1)
    samples = parse(metrics.exposition(quiet, now=2, version="1", previous_leaking_runs=5))
    assert value(samples, "shimctl_gc_leaks") == 0
    assert value(samples, "shimctl_gc_leaking_runs") == 0
    assert value(samples, "shimctl_gc_findings", kind="hung", namespace="default") == 1
    assert value(samples, "shimctl_gc_findings", kind="orphaned", namespace="default") == 1
    # A run that failed as a whole saw nothing: the count stands.
    failed = parse(metrics.exposition(None, now=3, version="1", previous_leaking_runs=4))
    assert value(failed, "shimctl_gc_leaking_runs") == 4
    assert value(failed, "shimctl_gc_leaks") == 0

    # Through the file: each run with leaks adds one, a clean run resets, a failure carries.
    target = tmp_path / "shimctl.prom"
    seen = []
    for run in (rep, rep, None, rep, quiet, rep):
        metrics.record_gc(target, run, version="1", run_error=None if run else "boom")
        seen.append(metrics.previous_leaking_runs(target))
    assert seen == [1, 2, 2, 3, 0, 1]


def test_garbled_previous_file_starts_counts_again(tmp_path: Path) -> None:
    target = tmp_path / "shimctl.prom"
    for garbage in ("shimctl_gc_leaking_runs -3\n", "shimctl_gc_leaking_runs NaN\n", "\xff\x00"):
        target.write_text(garbage)
        assert metrics.previous_leaking_runs(target) == 0
        assert metrics.previous_success(target) is None
    assert metrics.previous_leaking_runs(tmp_path / "missing.prom") == 0


def test_owner_source_every_source_listed() -> None:
    def sources(rep: ReconcileReport | None) -> dict[str, float]:
        samples = parse(metrics.exposition(rep, now=1, version="1"))
        return {
            dict(labels)["source"]: v
            for (name, labels), v in samples.items()
            if name == "shimctl_gc_owner_source"
        }

    rep = _report()
    assert rep.owner is None  # no summary: containerd's records were not read
    assert sources(rep) == {"api": 0, "metadb": 0, "unknown": 1}
    rep.owner = OwnerSummary(source="api", containerd_pid=1, version="v2.1.9")
    assert sources(rep) == {"api": 1, "metadb": 0, "unknown": 0}
    rep.owner = OwnerSummary(source="metadb")
    assert sources(rep) == {"api": 0, "metadb": 1, "unknown": 0}
    rep.owner = OwnerSummary(source="unknown", reason="meta.db unreadable")
    assert sources(rep) == {"api": 0, "metadb": 0, "unknown": 1}
    assert sources(None) == {"api": 0, "metadb": 0, "unknown": 1}


def test_label_values_are_escaped() -> None:
    # "odd" is deliberately no Kind member: any kind text goes out as given.
    odd = Finding("odd", 'n"s\\x\ny', "i", "/p", "r")  # type: ignore[arg-type]
    rep = summarize(Mode.GC, False, [odd], 0.1)
    samples = parse(metrics.exposition(rep, now=1, version="1"))
    assert value(samples, "shimctl_gc_findings", kind="odd", namespace='n"s\\x\ny') == 1


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "shimctl.prom"
    target.write_text("old\n")
    metrics.record_gc(target, summarize(Mode.GC, False, [], 0.0), version="1", now=5.0)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["shimctl.prom"]  # no temp file left behind
    assert metrics.previous_success(target) == 5.0
    with pytest.raises(Exception, match="does not exist"):
        metrics.record_gc(tmp_path / "no" / "x.prom", None, version="1")


# -- through the CLI ----------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(where: Path) -> Iterator[None]:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_gc_metrics_file_success_partial_failure_and_total_failure(node: Node) -> None:
    prom = node.base / "textfile" / "shimctl.prom"
    prom.parent.mkdir()
    for task in ("w1", "w2"):
        (node.workdir(task)).mkdir(parents=True)
    gc = ["-n", "default", "gc", "--min-age", "0", "--metrics-file", str(prom)]

    before = time.time()
    proc = run_cli(node, *gc)
    assert proc.returncode == 0, proc.stderr
    samples = parse(prom.read_text())
    assert value(samples, "shimctl_gc_findings", kind="orphan-workdir", namespace="default") == 2
    assert value(samples, "shimctl_gc_actions", action="remove", outcome="done") == 2
    assert value(samples, "shimctl_gc_errors") == 0
    first_success = value(samples, "shimctl_gc_last_success_timestamp_seconds")
    assert before <= first_success <= time.time()
    assert value(samples, "shimctl_info", version=__version__) == 1

    # Partial failure: a work dir that still holds a mount cannot be removed.
    stuck = node.workdir("w3")
    stuck.mkdir(parents=True)
    with tmpfs(stuck):
        proc = run_cli(node, *gc)
        assert proc.returncode == ExitCode.ACTIONS_FAILED, proc.stderr
    samples = parse(prom.read_text())
    assert value(samples, "shimctl_gc_errors") == 1
    assert value(samples, "shimctl_gc_success") == 0
    assert value(samples, "shimctl_gc_actions", action="remove", outcome="failed") == 1
    assert value(samples, "shimctl_gc_last_success_timestamp_seconds") == first_success
    assert value(samples, "shimctl_gc_last_run_timestamp_seconds") > first_success

    # The whole run fails (an unreadable config): the file still says so.
    bad = node.base / "bad.toml"
    bad.write_text("root = [\n")
    proc = run_cli(node, "--config", str(bad), *gc)
    assert proc.returncode == ExitCode.INVALID_ARGUMENT
    samples = parse(prom.read_text())
    assert value(samples, "shimctl_gc_errors") == 1
    assert value(samples, "shimctl_gc_success") == 0
    assert value(samples, "shimctl_gc_last_success_timestamp_seconds") == first_success
    assert not any(name == "shimctl_gc_findings" for name, _ in samples)
    assert sorted(os.listdir(prom.parent)) == ["shimctl.prom"]


def test_gc_metrics_dir_missing_cleans_then_fails(node: Node) -> None:
    node.workdir("w1").mkdir(parents=True)
    missing = node.base / "nowhere" / "shimctl.prom"
    proc = run_cli(node, "-n", "default", "gc", "--min-age", "0", "--metrics-file", str(missing))
    assert proc.returncode == ExitCode.INVALID_ARGUMENT
    assert "does not exist" in proc.stderr
    assert not node.workdir("w1").exists()  # gc ran: the metrics failure comes afterwards


def test_owner_sources_are_the_records_sources() -> None:
    from shimctl.records.model import Source

    assert set(metrics.OWNER_SOURCES) == {s.value for s in Source}
