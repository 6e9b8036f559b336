"""deploy/prometheus/shimctl-rules.yml under `promtool test rules`, fed from the metrics files of
real gc runs: a node with real shims (leaked, dead, hung, a running task containerd has no
record of) and leftovers, gc run after run as the timer runs it, each file turned into the
series node_exporter would serve until the next run. One case per alert, each checked before it
may fire, while it fires and after it stops."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shimctl.errors import ExitCode
from shimctl.node.bundle import SHIMCTL_STARTED
from shimctl.records.metadb import METADATA_DIR, METADATA_FILE
from tests.support import promtool
from tests.support.containerd import running_containerd
from tests.support.helpers import Node, run_cli, wait_gone
from tests.support.tasks import Started, create_task, spec_file, start_shim

pytestmark = pytest.mark.real
yaml = pytest.importorskip("yaml")  # the dev extra's PyYAML (no type stubs)

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "shimctl-rules.yml"
#: The labels node_exporter's scrape adds to every sample of the textfile.
TARGET = {"instance": "node-a", "job": "node"}
PERIOD_MINUTES = 15  # every schedule in deploy/ (tests/unit/test_deploy.py checks)

Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Run:
    """One gc run's metrics file, parsed."""

    text: str = field(repr=False)
    samples: dict[Key, float] = field(repr=False)

    @classmethod
    def of(cls, text: str) -> Run:
        samples: dict[Key, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return cls(text, samples)

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    def total(self, name: str, **labels: str) -> float:
        want = labels.items()
        return sum(
            v for (n, ls), v in self.samples.items() if n == name and want <= dict(ls).items()
        )


def _selector(key: Key) -> str:
    name, labels = key
    pairs = [*labels, *TARGET.items()]
    return name + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in pairs) + "}"


def series(runs: list[tuple[int, Run]], until: int) -> list[dict[str, str]]:
    """promtool's input series: each run's samples from its minute until the next run's (one a
    minute, as a scrape every minute sees the unchanged file), a sample a run lacks missing.
    Timestamps are moved onto promtool's clock, which starts at 0: a run at minute m says it
    ran at m*60 s, and its other timestamps keep their distance to that."""
    keys = sorted({k for _, run in runs for k in run.samples})
    bounds = [m for m, _ in runs[1:]] + [until]
    out = []
    for key in keys:
        values: list[str] = []
        for (start, run), end in zip(runs, bounds, strict=True):
            v = run.samples.get(key)
            if v is not None and key[0].endswith("_timestamp_seconds"):
                v = v - run.value("shimctl_gc_last_run_timestamp_seconds") + start * 60
            values += [("_" if v is None else repr(float(v)))] * (end - start)
        out.append({"series": _selector(key), "values": " ".join(values)})
    return out


def _rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def expected(alert: str, **labels: str) -> dict[str, Any]:
    """The alert as promtool reports it: the series' labels, the rule's, annotations rendered."""
    rule = _rules()[alert]
    annotations = {}
    for k, v in rule["annotations"].items():
        v = v.replace("{{ $labels.instance }}", TARGET["instance"])
        assert "{{" not in v, f"{alert}.{k}: a template this test does not render"
        annotations[k] = v
    return {
        "exp_labels": {**TARGET, **labels, **rule["labels"]},
        "exp_annotations": annotations,
    }


def case(
    alert: str,
    runs: list[tuple[int, Run]],
    until: int,
    quiet: list[int],
    firing: list[int],
    **labels: str,
) -> dict[str, Any]:
    """One promtool test group: `alert` does not fire at the `quiet` minutes, fires at `firing`."""
    checks: list[dict[str, Any]] = [
        {"eval_time": f"{m}m", "alertname": alert, "exp_alerts": []} for m in quiet
    ]
    checks += [
        {"eval_time": f"{m}m", "alertname": alert, "exp_alerts": [expected(alert, **labels)]}
        for m in firing
    ]
    checks.sort(key=lambda c: int(str(c["eval_time"])[:-1]))
    return {
        "name": alert,
        "interval": "1m",
        "input_series": series(runs, until),
        "alert_rule_test": checks,
    }


@dataclass(frozen=True)
class GcRuns:
    leaking: Run  # leaked and dead shims, an orphan work dir; a hung shim
    leaking_again: Run  # the next run: one more leaked shim appeared since
    clean: Run  # nothing left to clean; the hung shim stays (reported)
    failed: Run  # the run itself failed (an unreadable config)
    orphaned: tuple[Run, Run]  # two runs with containerd's records read: one task none owns


def _gc(node: Node, prom: Path, *extra: str) -> Run:
    # --timeout 2: the hung shim costs each run its probe timeout, not containerd's 5 s.
    gc = ["gc", "--min-age", "0", "--timeout", "2", "--metrics-file", str(prom)]
    proc = run_cli(node, *extra, *gc)
    assert proc.returncode == (ExitCode.INVALID_ARGUMENT if extra else ExitCode.OK), proc.stderr
    return Run.of(prom.read_text())


@pytest.fixture
def gc_runs(node: Node, started: Started, socket_dir_exclusive: None) -> GcRuns:
    prom = node.base / "textfile" / "shimctl.prom"
    prom.parent.mkdir()
    # A meta.db of containerd's own making (it starts and stops before any bundle exists, so its
    # startup touches none), kept aside while the first runs find no records to read.
    with running_containerd(node):
        pass
    meta_db = node.root / METADATA_DIR / METADATA_FILE
    aside = node.base / "meta.db.aside"
    meta_db.rename(aside)
    started.process(start_shim(node, "leak1")["shim_pid"])  # a shim with no task
    dead = started.process(start_shim(node, "dead1")["shim_pid"])
    os.kill(dead, signal.SIGKILL)
    assert wait_gone(dead, None, timeout=10)
    hung = started.process(start_shim(node, "hung1")["shim_pid"])
    os.kill(hung, signal.SIGSTOP)  # connects, never answers
    node.workdir("orphanwork1").mkdir(parents=True)
    leaking = _gc(node, prom)
    started.process(start_shim(node, "leak2")["shim_pid"])
    leaking_again = _gc(node, prom)
    clean = _gc(node, prom)
    bad = node.base / "bad.toml"
    bad.write_text("root = [\n")
    failed = _gc(node, prom, "--config", str(bad))
    # containerd's records back (stopped: gc reads its meta.db), and a running task they do not
    # have: its bundle without shimctl's own mark, as if a containerd had made it and lost it.
    aside.rename(meta_db)
    started.process(start_shim(node, "orph1", "--spec", str(spec_file(node)))["shim_pid"])
    started.process(create_task(node, "orph1"))
    started.container("orph1")
    (node.bundle("orph1") / SHIMCTL_STARTED).unlink()
    orphaned = (_gc(node, prom), _gc(node, prom))
    return GcRuns(leaking, leaking_again, clean, failed, orphaned)


def test_every_alert_fires_on_real_gc_runs(gc_runs: GcRuns, tmp_path: Path) -> None:
    leaking, again, clean, failed = (
        gc_runs.leaking,
        gc_runs.leaking_again,
        gc_runs.clean,
        gc_runs.failed,
    )
    # One scene for both checks (it takes a while): each file passes promtool's lint first.
    for run in (leaking, again, clean, failed, *gc_runs.orphaned):
        assert promtool.run("check", "metrics", stdin=run.text).strip() == ""
    # What the runs found, before the rules are asked about it.
    assert leaking.total("shimctl_gc_findings", kind="leaked") == 1
    assert leaking.total("shimctl_gc_findings", kind="dead") == 1
    assert leaking.total("shimctl_gc_findings", kind="hung") == 1
    assert leaking.value("shimctl_gc_leaks") >= 3  # leak1, dead1, orphanwork1
    assert leaking.value("shimctl_gc_leaking_runs") == 1
    assert again.total("shimctl_gc_findings", kind="leaked") == 1  # leak2
    assert again.value("shimctl_gc_leaking_runs") == 2
    assert clean.value("shimctl_gc_leaks") == 0 and clean.value("shimctl_gc_leaking_runs") == 0
    assert clean.total("shimctl_gc_findings", kind="hung") == 1
    assert clean.value("shimctl_gc_success") == 1
    assert failed.value("shimctl_gc_success") == 0
    # No containerd on this node, no meta.db: its records cannot be read.
    for run in (leaking, again, clean):
        assert run.value("shimctl_gc_owner_source", source="unknown") == 1
        assert run.total("shimctl_gc_findings", kind="orphaned") == 0
    # With containerd's records read: the orphaned task, found again by the next run.
    orphaned, orphaned_again = gc_runs.orphaned
    for run in gc_runs.orphaned:
        assert run.value("shimctl_gc_owner_source", source="metadb") == 1
        assert run.value("shimctl_gc_owner_source", source="unknown") == 0
        assert run.total("shimctl_gc_findings", kind="orphaned") == 1

    p = PERIOD_MINUTES
    three = [(0, leaking), (p, again), (2 * p, clean)]
    tests = [
        # Fails on two runs in a row; one failure alone is not enough.
        case("ShimctlGcFailing", [(0, clean), (p, failed), (2 * p, failed)], 3 * p, [10, 25], [40]),
        case(
            "ShimctlGcFailing",
            [(0, clean), (p, failed), (2 * p, clean), (3 * p, failed)],
            4 * p,
            [10, 25, 40, 55],
            [],
        ),
        # The file stays as the last run left it: two periods later, gc is missed.
        case("ShimctlGcNotRunning", [(0, clean)], 4 * p, [10, 25, 30], [40, 55]),
        case("ShimctlGcNotRunning", [(0, clean), (p, clean), (2 * p, clean)], 3 * p, [40], []),
        # Leaks in two runs in a row fire; a clean run ends it.
        case("ContainerdShimsKeepLeaking", three, 3 * p, [10, 40], [20]),
        case("ContainerdShimsHung", three, 3 * p, [10], [25, 40]),
        case("ContainerdShimsHung", [(0, leaking), (p, failed)], 2 * p, [10, 25], []),
        case("ContainerdTasksOrphaned", three, 3 * p, [10, 25, 40], []),
        case("ContainerdTasksOrphaned", [(0, orphaned), (p, orphaned_again)], 2 * p, [10], [25]),
        case("ShimctlOwnerUnknown", three, 3 * p, [10], [25, 40], source="unknown"),
        case("ShimctlOwnerUnknown", [(0, orphaned), (p, orphaned_again)], 2 * p, [10, 25], []),
    ]
    assert {t["name"] for t in tests} == set(_rules())
    test_file = tmp_path / "shimctl-rules.test.yml"
    test_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": tests},
            sort_keys=False,
            width=1 << 20,
        )
    )
    out = promtool.run("test", "rules", str(test_file))
    assert "SUCCESS" in out, out
