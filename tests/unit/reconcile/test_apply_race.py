"""A bundle containerd removes while shimctl acts on it (its disconnect cleanup deletes the
bundle between shimctl's lstat and rename): the outcome is "removed by containerd", not a
failure, and the run exits 0."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from shimctl.cli.exits import report_exit
from shimctl.errors import ExitCode
from shimctl.models.findings import Action, Kind, Mode, Outcome
from shimctl.reconcile.apply import apply
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision, Planned
from shimctl.reconcile.run import assemble, summarize
from shimctl.settings import Settings


def test_a_bundle_containerd_removes_meanwhile_is_no_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")
    bundle = settings.task_state / "k8s.io" / "e1"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{}")  # a dead shim's bundle, no shim binary named
    (settings.task_root / "k8s.io").mkdir(parents=True)
    real_rename = os.rename
    raced: list[str] = []

    def containerd_first(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(src) == bundle and not raced:
            # containerd's own atomic delete wins: the same `.<id>` rename, then removal.
            raced.append(str(src))
            real_rename(src, dst)
            shutil.rmtree(dst)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", containerd_first)
    item = Item("k8s.io", "e1", str(bundle), age_seconds=600.0)
    planned = [Planned(item, Decision(Kind.DEAD, Action.DELETE_DEAD, "no shim answers"))]

    results = apply(settings, planned, dry_run=False)
    report = summarize(Mode.GC, False, assemble(planned, results), 0.1)

    assert raced == [str(bundle)]
    (f,) = report.findings
    assert f.outcome == Outcome.REMOVED_BY_CONTAINERD, f
    assert f.error is None and any("No such file" in n for n in f.notes), f.notes
    assert report.errors == 0 and report_exit(report) == ExitCode.OK
    assert not bundle.exists() and not (bundle.parent / ".e1").exists()


def test_a_bundle_that_stays_but_fails_is_still_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")
    bundle = settings.task_state / "k8s.io" / "e2"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{}")
    (settings.task_root / "k8s.io").mkdir(parents=True)

    def missing(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise FileNotFoundError(2, "No such file or directory", os.fspath(src))

    monkeypatch.setattr(os, "rename", missing)
    item = Item("k8s.io", "e2", str(bundle), age_seconds=600.0)
    planned = [Planned(item, Decision(Kind.DEAD, Action.DELETE_DEAD, "no shim answers"))]

    (result,) = apply(settings, planned, dry_run=False)

    assert result is not None and result.outcome == Outcome.FAILED
    assert bundle.is_dir()
