"""apply's order: a sandbox the plan cleans with its members (Decision.after_members) is acted
on after them, and only when each member is gone. Empty bundles (delete-bundle) stand in for
the members: what they are does not matter to the order, only how their action ended."""

from __future__ import annotations

from pathlib import Path

from shimctl.models.findings import Action, Kind, Outcome
from shimctl.reconcile.apply import apply
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision, Planned
from shimctl.settings import Settings

NS = "k8s.io"
EMPTY = Decision(Kind.EMPTY, Action.DELETE_BUNDLE, "bundle dir is empty")
POD = Decision(Kind.EMPTY, Action.DELETE_BUNDLE, "pod sandbox", after_members=True)


def _setup(tmp_path: Path, *names: str) -> Settings:
    settings = Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")
    for name in names:
        (settings.task_state / NS / name).mkdir(parents=True)
    return settings


def _item(
    settings: Settings, id: str, sandbox: str | None = None, address: str | None = None
) -> Item:
    path = str(settings.task_state / NS / id)
    return Item(NS, id, path, age_seconds=900.0, sandbox=sandbox, address=address)


def test_the_sandbox_goes_after_its_members(tmp_path: Path) -> None:
    settings = _setup(tmp_path, "pod", "m1", "m2", "other")
    shared = "unix:///run/containerd/s/0123456789abcdef"
    planned = [
        # The sandbox first in the plan's order: apply must still wait for its members.
        Planned(_item(settings, "pod", address=shared), POD),
        Planned(_item(settings, "m1", sandbox="pod"), EMPTY),
        Planned(_item(settings, "m2", address=shared), EMPTY),  # on its shim
        Planned(_item(settings, "other"), EMPTY),
    ]
    results = apply(settings, planned, dry_run=False)
    assert [r.outcome if r else None for r in results] == [Outcome.DONE] * 4, results
    assert not list((settings.task_state / NS).iterdir())


def test_a_member_left_keeps_its_sandbox(tmp_path: Path) -> None:
    settings = _setup(tmp_path, "pod", "m1", "m2")
    (settings.task_state / NS / "m2" / "config.json").write_text("{}")  # no longer empty
    planned = [
        Planned(_item(settings, "pod"), POD),
        Planned(_item(settings, "m1", sandbox="pod"), EMPTY),
        Planned(_item(settings, "m2", sandbox="pod"), EMPTY),
    ]
    pod, m1, m2 = apply(settings, planned, dry_run=False)
    assert m1 is not None and m1.outcome == Outcome.DONE
    assert m2 is not None and m2.outcome == Outcome.SKIPPED
    assert pod is not None and pod.outcome == Outcome.SKIPPED
    assert pod.notes == ("member m2 was not cleaned (skipped): kept for it",)
    assert (settings.task_state / NS / "pod").is_dir()


def test_a_member_in_another_namespace_is_not_its_member(tmp_path: Path) -> None:
    settings = _setup(tmp_path, "pod")
    (settings.task_state / "default" / "m1").mkdir(parents=True)
    (settings.task_state / "default" / "m1" / "f").write_text("x")
    other = Item("default", "m1", str(settings.task_state / "default" / "m1"), sandbox="pod")
    planned = [Planned(_item(settings, "pod"), POD), Planned(other, EMPTY)]
    pod, m1 = apply(settings, planned, dry_run=False)
    assert m1 is not None and m1.outcome == Outcome.SKIPPED
    assert pod is not None and pod.outcome == Outcome.DONE
