"""journal.record_exits: one /tasks/delete event per exited task gc deleted, its value a
containerd.events.TaskDelete. The value is decoded with a message class built here from
containerd's api/events/task.proto field numbers, independently of shimctl's encoder."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

from shimctl.models.findings import Action, Finding, Kind, Mode, Outcome, ReconcileReport
from shimctl.ops import journal
from shimctl.settings import Settings


def _task_delete_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    stamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(stamp)
    pool.Add(stamp)
    f = descriptor_pb2.FileDescriptorProto(
        name="containerd/events/task.proto",
        package="containerd.events",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )
    msg = f.message_type.add(name="TaskDelete")
    T = descriptor_pb2.FieldDescriptorProto
    for name, number, kind, type_name in (
        ("container_id", 1, T.TYPE_STRING, None),
        ("pid", 2, T.TYPE_UINT32, None),
        ("exit_status", 3, T.TYPE_UINT32, None),
        ("exited_at", 4, T.TYPE_MESSAGE, ".google.protobuf.Timestamp"),
        ("id", 5, T.TYPE_STRING, None),
    ):
        field = msg.field.add(name=name, number=number, type=kind, label=T.LABEL_OPTIONAL)
        if type_name:
            field.type_name = type_name
    pool.Add(f)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("containerd.events.TaskDelete")
    )


TaskDelete = _task_delete_class()


def _finding(id: str, action: Action, outcome: Outcome | None, **kw: Any) -> Finding:
    return Finding(Kind.LEAKED, kw.pop("namespace", "default"), id, f"/b/{id}", "r", action,
                   outcome=outcome, **kw)  # fmt: skip


def _report(*findings: Finding) -> ReconcileReport:
    return ReconcileReport(Mode.GC, False, list(findings), 0.1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")


def test_exits_of_deleted_tasks_are_journalled(settings: Settings) -> None:
    report = _report(
        _finding(
            "gone",
            Action.DELETE_TASK,
            Outcome.DONE,
            exit_status=3,
            exited_at=1_700_000_000.25,
            task_pids=[4242],
        ),
        _finding("k", Action.STOP_TASK, Outcome.DONE, exit_status=137, namespace="k8s.io"),
        _finding(
            "via",
            Action.DELETE_VIA_CONTAINERD,
            Outcome.DONE,
            exit_status=0,
            exited_at=1_600_000_000.0,
        ),
        # containerd's cleanup of the shut-down shim removed the bundle: the task is gone.
        _finding("raced", Action.DELETE_TASK, Outcome.REMOVED_BY_CONTAINERD, exit_status=5),
        # Not journalled: no exit seen, not done, not a task delete.
        _finding("noexit", Action.DELETE_TASK, Outcome.DONE),
        _finding("skipped", Action.DELETE_TASK, Outcome.SKIPPED, exit_status=1),
        _finding("failed", Action.DELETE_TASK, Outcome.FAILED, exit_status=1),
        _finding("dry", Action.DELETE_TASK, Outcome.DRY_RUN, exit_status=1),
        _finding("dead", Action.DELETE_DEAD, Outcome.DONE, exit_status=1),
    )
    assert journal.record_exits(settings, report) == 4
    events = journal.read(settings).events
    assert [(e.namespace, e.topic, e.type_url) for e in events] == [
        ("default", "/tasks/delete", "containerd.events.TaskDelete"),
        ("k8s.io", "/tasks/delete", "containerd.events.TaskDelete"),
        ("default", "/tasks/delete", "containerd.events.TaskDelete"),
        ("default", "/tasks/delete", "containerd.events.TaskDelete"),
    ]
    decoded = [TaskDelete.FromString(base64.b64decode(e.value)) for e in events]
    first, second, third, fourth = decoded
    assert (fourth.container_id, fourth.exit_status) == ("raced", 5)
    assert (first.container_id, first.pid, first.exit_status, first.id) == ("gone", 4242, 3, "")
    assert (first.exited_at.seconds, first.exited_at.nanos) == (1_700_000_000, 250_000_000)
    assert (second.container_id, second.pid, second.exit_status) == ("k", 0, 137)
    assert not second.HasField("exited_at")  # unknown: no made-up time
    assert (third.container_id, third.exit_status, third.exited_at.seconds) == (
        "via",
        0,
        1_600_000_000,
    )
    assert all(not f.notes for f in report.findings)


def test_nothing_to_journal_writes_nothing(settings: Settings) -> None:
    report = _report(_finding("x", Action.DELETE_TASK, Outcome.DONE))
    assert journal.record_exits(settings, report) == 0
    assert not journal.journal_path(settings).exists()


def test_an_unwritable_journal_is_noted_not_raised(settings: Settings) -> None:
    settings.task_state.parent.mkdir(parents=True)
    settings.task_state.mkdir()
    os.mkdir(journal.journal_path(settings))  # a directory where the file should be
    report = _report(_finding("gone", Action.DELETE_TASK, Outcome.DONE, exit_status=3))
    assert journal.record_exits(settings, report) == 0
    (note,) = report.findings[0].notes
    assert note.startswith("its exit was not written to the events journal: ")
