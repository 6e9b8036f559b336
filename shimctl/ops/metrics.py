"""gc's metrics in the Prometheus text exposition format, for node_exporter's textfile collector.

The file is replaced atomically (a temp file in the same dir that does not end in `.prom`, then
rename), so the collector never reads half of it. What spans runs is read back from the previous
file: a run that failed keeps the last success timestamp of the run before it, and the count of
consecutive runs that found leaks goes on from the previous one.

The families (all gauges, of the last run; deploy/README.md lists them for operators, and
deploy/prometheus/shimctl-rules.yml alerts on them):
  shimctl_info{version}                        always 1
  shimctl_gc_findings{kind,namespace}          items found; every kind per namespace seen
  shimctl_gc_actions{action,outcome}           actions taken, by outcome
  shimctl_gc_errors                            failed actions (1 when the run itself failed)
  shimctl_gc_success                           1 when the run had no error
  shimctl_gc_dry_run                           1 for a --dry-run
  shimctl_gc_duration_seconds                  how long the run took
  shimctl_gc_last_run_timestamp_seconds        when it ran
  shimctl_gc_last_success_timestamp_seconds    when a run last had no error (absent: never)
  shimctl_gc_leaks                             items with something to clean (see _is_leak)
  shimctl_gc_leaking_runs                      consecutive runs, this one included, with leaks
  shimctl_gc_owner_source{source}              1 for where containerd's records came from
                                               (api, metadb, unknown), 0 for the others
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from pathlib import Path

from shimctl.errors import InvalidArgument
from shimctl.models.findings import Action, Finding, Kind, ReconcileReport

PREFIX = "shimctl_gc_"
_LAST_SUCCESS = f"{PREFIX}last_success_timestamp_seconds"
_LEAKING_RUNS = f"{PREFIX}leaking_runs"
# An unlabelled sample of the previous file: `name value`.
_PLAIN_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\s+([0-9.eE+-]+)\s*$", re.MULTILINE)
# Where containerd's records came from (OwnerSummary.source); a run without a summary: unknown.
OWNER_SOURCES = ("api", "metadb", "unknown")


def _is_leak(f: Finding) -> bool:
    """Something gc cleans (or would clean, in a dry run, or failed to): an action other than
    keep or report. Reported items (a hung shim without --kill-hung, an orphaned task, another
    containerd's socket) are found again every run by design and have their own findings."""
    return f.action not in (Action.KEEP, Action.REPORT)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        help_text: str,
        samples: list[tuple[dict[str, str], float]],
        kind: str = "gauge",
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.lines.append(f"{name}{_labels(**labels)} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def exposition(
    report: ReconcileReport | None,
    *,
    now: float,
    version: str,
    previous_success: float | None = None,
    previous_leaking_runs: int = 0,
    run_error: str | None = None,
) -> str:
    """The metrics of one gc run. `report` is None when the run itself failed (`run_error`):
    the file then still says so, with one error and no findings (the leaking-runs count is
    carried over unchanged: that run saw nothing)."""
    errors = report.errors if report is not None else 1
    success = report is not None and run_error is None and errors == 0
    last_success = now if success else previous_success
    leaks = sum(1 for f in report.findings if _is_leak(f)) if report is not None else 0
    if report is None:
        leaking_runs = previous_leaking_runs
    else:
        leaking_runs = previous_leaking_runs + 1 if leaks else 0
    source = report.owner.source if report is not None and report.owner is not None else ""
    if source not in OWNER_SOURCES:
        source = "unknown"
    out = _Exposition()
    out.family("shimctl_info", "shimctl's version.", [({"version": version}, 1)])
    findings: dict[tuple[str, str], int] = {}
    actions: dict[tuple[str, str], int] = {}
    if report is not None:
        namespaces = sorted({f.namespace for f in report.findings if f.namespace})
        # Every kind per namespace seen, zeros too: an alert on a kind needs no absent() rule.
        for ns in namespaces:
            for kind in Kind:
                findings[(kind, ns)] = 0
        for f in report.findings:
            findings[(f.kind, f.namespace)] = findings.get((f.kind, f.namespace), 0) + 1
        for key, n in report.actions.items():
            action, _, outcome = key.partition(":")
            actions[(action, outcome)] = n
    out.family(
        f"{PREFIX}findings",
        "Items gc found in its last run, by kind and namespace.",
        [({"kind": k, "namespace": ns}, n) for (k, ns), n in sorted(findings.items())],
    )
    out.family(
        f"{PREFIX}actions",
        "Actions gc took in its last run, by action and outcome (done, failed, skipped, dry-run).",
        [({"action": a, "outcome": o}, n) for (a, o), n in sorted(actions.items())],
    )
    out.family(
        f"{PREFIX}errors",
        "Actions that failed in gc's last run (1 when the run itself failed).",
        [({}, errors)],
    )
    out.family(
        f"{PREFIX}success", "1 if gc's last run finished with no error, else 0.", [({}, success)]
    )
    out.family(
        f"{PREFIX}dry_run",
        "1 if gc's last run was a dry run.",
        [({}, bool(report and report.dry_run))],
    )
    out.family(
        f"{PREFIX}duration_seconds",
        "How long gc's last run took.",
        [({}, report.duration_seconds if report is not None else 0.0)],
    )
    out.family(
        f"{PREFIX}last_run_timestamp_seconds",
        "When gc last ran (Unix time).",
        [({}, round(now, 3))],
    )
    if last_success is not None:
        out.family(
            _LAST_SUCCESS,
            "When gc last finished with no error (Unix time).",
            [({}, round(last_success, 3))],
        )
    out.family(
        f"{PREFIX}leaks",
        "Items gc's last run found to clean (any action but keep or report, whatever its outcome).",
        [({}, leaks)],
    )
    out.family(
        _LEAKING_RUNS,
        "Consecutive gc runs, the last one included, that found items to clean (0: none).",
        [({}, leaking_runs)],
    )
    out.family(
        f"{PREFIX}owner_source",
        "1 for where gc's last run read containerd's records from (api, metadb; unknown: none).",
        [({"source": s}, s == source) for s in OWNER_SOURCES],
    )
    return out.text()


def _previous(path: Path) -> dict[str, float]:
    """The unlabelled samples of an earlier metrics file (none when it is missing or garbled)."""
    try:
        with open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return {}
    out: dict[str, float] = {}
    for name, number in _PLAIN_LINE.findall(text):
        with contextlib.suppress(ValueError):
            out[name] = float(number)
    return out


def previous_success(path: Path) -> float | None:
    """The last success timestamp in an earlier metrics file, if there is one."""
    return _previous(path).get(_LAST_SUCCESS)


def previous_leaking_runs(path: Path) -> int:
    """The leaking-runs count of an earlier metrics file (0 without one)."""
    return _count(_previous(path).get(_LEAKING_RUNS, 0.0))


def _count(value: float) -> int:
    """A count read back: a negative, NaN or infinite one (a garbled file) starts again at 0."""
    return int(value) if math.isfinite(value) and value >= 0 else 0


def check_target(path: Path) -> Path:
    """Refuse a metrics path whose directory is missing before gc runs, not after."""
    path = Path(os.path.abspath(path))
    if not path.parent.is_dir():
        raise InvalidArgument(
            f"--metrics-file {path}: directory {path.parent} does not exist",
            hint="create the textfile collector directory or pass another path",
        )
    if path.is_dir():
        raise InvalidArgument(f"--metrics-file {path} is a directory")
    return path


def write_metrics(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, mode 0644 (node_exporter reads it as any user)."""
    directory = check_target(path).parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def record_gc(
    path: Path,
    report: ReconcileReport | None,
    *,
    version: str,
    run_error: str | None = None,
    now: float | None = None,
) -> None:
    """Write the metrics of one gc run to `path`, carrying over what spans runs."""
    previous = _previous(path)
    text = exposition(
        report,
        now=time.time() if now is None else now,
        version=version,
        previous_success=previous.get(_LAST_SUCCESS),
        previous_leaking_runs=_count(previous.get(_LEAKING_RUNS, 0.0)),
        run_error=run_error,
    )
    write_metrics(path, text)
