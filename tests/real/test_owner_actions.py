"""gc's owner actions carried out on real tasks of every containerd generation (1.6, 1.7, 2.1),
with their real shims and runc: stop-task of a running and of a created task whose container
record a client deleted (Containers.Delete), delete-via-containerd of a stopped task, and the
no-record re-check that leaves a task alone once a record is back (through the API, and
through meta.db with containerd stopped).

The items are the evidence shimctl's own collect() reads; the decisions are built here (the
planner has its own tests). Asserted: processes (by PID and start time), the bundle, runc's
state, containerd's own answers (ctr)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from shimctl.models.findings import Action, Kind, Mode, Outcome
from shimctl.ops import journal
from shimctl.reconcile.apply import ActionResult, apply
from shimctl.reconcile.collect import collect
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision, Planned
from shimctl.reconcile.run import assemble, summarize
from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
from shimctl.settings import Settings
from tests.support.containerd import Containerd
from tests.support.findings import by_id
from tests.support.helpers import Node, pid_alive, run_cli, wait_gone
from tests.support.owner_states import Api

pytestmark = pytest.mark.real

#: Where runc keeps the state of containerd's containers (the runc shim's default root).
RUNC_ROOT = Path("/run/containerd/runc")
#: Done, or done with containerd's own dead-shim cleanup first to the bundle (both are gone).
FINISHED = (Outcome.DONE, Outcome.REMOVED_BY_CONTAINERD)


def _settings(node: Node) -> Settings:
    return Settings(
        root=node.root,
        state=node.state,
        address=node.address,
        ttrpc_address=node.ttrpc_address,
        namespace="default",
        namespace_given=True,
    )


def _item(settings: Settings, cid: str) -> Item:
    """The item shimctl's own evidence gives for `cid`."""
    (ev,) = [ev for ev in collect(settings).bundles if ev.id == cid]
    return ev.item()


def _act(settings: Settings, item: Item, decision: Decision) -> ActionResult:
    (result,) = apply(settings, [Planned(item, decision)], dry_run=False)
    assert result is not None
    return result


class Proc:
    """A process identified by PID and start time."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.created = psutil.Process(pid).create_time()

    def alive(self) -> bool:
        return pid_alive(self.pid, self.created)

    def gone(self, timeout: float = 10.0) -> bool:
        return wait_gone(self.pid, self.created, timeout)


def _created_task(node: Node, cd: Containerd, cid: str) -> None:
    """A task containerd created and never started (runc init waits): Tasks.Create through
    containerd's API, as a client killed between Create and Start leaves it."""
    cd.ctr("container", "create", "--rootfs", str(cd.rootfs), cid, "/bin/sleep", "600")
    api = Api(node)
    try:
        api._call(
            "/containerd.services.tasks.v1.Tasks/Create",
            tasks_pb2.CreateTaskRequest(container_id=cid),
            tasks_pb2.CreateTaskResponse,
            "default",
        )
    finally:
        api.close()
    cd.wait_task(cid, "CREATED")


@contextlib.contextmanager
def _without_record(node: Node, cd: Containerd, cid: str) -> Iterator[Any]:
    """Delete the container record (not the task), as a client deleting only the record does;
    yields the record. Put back at the end while its task is still there, so the containerd
    fixture's cleanup (ctr task rm, which needs the record) can stop what a failed test left."""
    api = Api(node)
    try:
        record = api.container(cid)
        api.delete_container(cid)
    finally:
        api.close()
    try:
        yield record
    finally:
        if not cd.running:
            cd.start()
        if cid in cd.tasks() and cid not in cd.containers():
            api = Api(node)
            try:
                api.create_container(record)
            finally:
                api.close()


def _orphaned(kind: Kind = Kind.ORPHANED) -> Decision:
    return Decision(kind, Action.STOP_TASK, "containerd has no record", recheck_no_record=True)


def _check_stopped_and_gone(
    node: Node, cd: Containerd, cid: str, result: ActionResult, task: Proc, shim: Proc
) -> None:
    assert result.outcome in FINISHED, result
    assert any(f"killed task {cid}" in n and "SIGKILL" in n for n in result.notes), result.notes
    assert task.gone() and shim.gone()
    assert not node.bundle(cid).exists() and not node.workdir(cid).exists()
    assert not (RUNC_ROOT / "default" / cid).exists()  # runc's state went with the task
    cd.ctr("task", "ls")  # containerd still answers; its view: no such task, no record
    assert cid not in cd.tasks() and cid not in cd.containers()


def test_stop_task_of_a_running_task_with_no_record(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    cd = containerd
    (cid,) = cd.ids("orphan")
    task = Proc(cd.run_container(cid))
    shim = Proc(cd.shim_pid(cid))
    with _without_record(node, cd, cid):
        settings = _settings(node)
        item = _item(settings, cid)
        assert (item.task_status, item.task_pids[:1]) == ("running", (task.pid,)), item
        result = _act(settings, item, _orphaned())
    _check_stopped_and_gone(node, cd, cid, result, task, shim)


def test_stop_task_of_a_created_task_with_no_record(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    cd = containerd
    (cid,) = cd.ids("created")
    _created_task(node, cd, cid)
    init = Proc(cd.tasks()[cid][0])  # `runc init`, waiting to be started
    shim = Proc(cd.shim_pid(cid))
    with _without_record(node, cd, cid):
        settings = _settings(node)
        item = _item(settings, cid)
        assert item.task_status == "created", item
        result = _act(settings, item, _orphaned(Kind.CREATED))
    _check_stopped_and_gone(node, cd, cid, result, init, shim)


def test_delete_via_containerd_of_a_stopped_task(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    cd = containerd
    (cid,) = cd.ids("exited")
    cd.ctr("run", "-d", "--null-io", "--rootfs", str(cd.rootfs), cid, "/bin/sh", "-c", "exit 3")
    cd.wait_task(cid, "STOPPED")
    shim = Proc(cd.shim_pid(cid))
    settings = _settings(node)
    item = _item(settings, cid)
    assert (item.task_status, item.exit_status) == ("stopped", 3), item
    decision = Decision(Kind.LEAKED, Action.DELETE_VIA_CONTAINERD, "exited before containerd")
    result = _act(settings, item, decision)
    assert result.outcome == Outcome.DONE, result
    assert any("deleted through containerd's Tasks API" in n and "exit status 3" in n
               for n in result.notes), result.notes  # fmt: skip
    # containerd's own view: the task is gone, the record stays for its owner.
    assert cid not in cd.tasks() and cid in cd.containers()
    assert not node.bundle(cid).exists()  # containerd removed it before it answered
    assert not any("left the bundle" in n for n in result.notes)
    assert shim.gone()
    # Asked again (a bundle dir of that name made again, so the action gets as far as
    # containerd): containerd has the record but no task, answers NotFound; nothing is done.
    node.bundle(cid).mkdir()
    try:
        again = _act(settings, dataclasses.replace(item, task_status=None), decision)
        assert again.outcome == Outcome.SKIPPED, again
        (note,) = again.notes
        assert note.startswith("containerd has no such task now: someone else deleted it"), note
        assert node.bundle(cid).is_dir() and cid in cd.containers()
    finally:
        node.bundle(cid).rmdir()


def test_a_record_that_came_back_keeps_the_task(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    cd = containerd
    (cid,) = cd.ids("back")
    task = Proc(cd.run_container(cid))
    shim = Proc(cd.shim_pid(cid))
    with _without_record(node, cd, cid) as record:
        settings = _settings(node)
        item = _item(settings, cid)

        # No record, but the task is not what the decision saw: left.
        seen_created = dataclasses.replace(item, task_status="created")
        changed = _act(settings, seen_created, _orphaned(Kind.CREATED))
        assert changed.outcome == Outcome.SKIPPED, changed
        assert changed.notes == ("its task is running now (was created)",)

        api = Api(node)
        try:
            api.create_container(record)  # a client made the record again
        finally:
            api.close()
        via_api = _act(settings, item, _orphaned())
        assert via_api.outcome == Outcome.SKIPPED, via_api
        assert via_api.notes == ("containerd has a record of it now",)

        cd.stop()  # the shims stay; the re-check reads meta.db now
        via_metadb = _act(settings, item, _orphaned())
        assert via_metadb.outcome == Outcome.SKIPPED, via_metadb
        assert via_metadb.notes == ("containerd has a record of it now",)
        assert task.alive() and shim.alive()
        assert node.bundle(cid).is_dir() and (RUNC_ROOT / "default" / cid).exists()
    # containerd, started again on leaving the block, still has its task running.
    assert cd.tasks()[cid] == (task.pid, "RUNNING")


def test_delete_task_of_a_stopped_task_with_no_record_keeps_its_exit(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    """A task that exited and whose record a client deleted: deleted straight through its
    shim (containerd's API cannot reach it), its exit status kept in the report and the
    events journal."""
    cd = containerd
    (cid,) = cd.ids("exitnorec")
    cd.ctr("run", "-d", "--null-io", "--rootfs", str(cd.rootfs), cid, "/bin/sh", "-c", "exit 7")
    cd.wait_task(cid, "STOPPED")
    shim = Proc(cd.shim_pid(cid))
    with _without_record(node, cd, cid):
        settings = _settings(node)
        item = _item(settings, cid)
        assert (item.task_status, item.exit_status) == ("stopped", 7), item
        decision = Decision(
            Kind.LEAKED, Action.DELETE_TASK, "exited, no record", recheck_no_record=True
        )
        planned = [Planned(item, decision)]
        results = apply(settings, planned, dry_run=False)
    (result,) = results
    assert result is not None and result.outcome in FINISHED, result
    assert "task deleted (exit status 7)" in result.notes
    assert shim.gone() and not node.bundle(cid).exists()
    assert not (RUNC_ROOT / "default" / cid).exists()

    report = summarize(Mode.GC, False, assemble(planned, results), 0.0)
    assert journal.record_exits(settings, report) == 1
    (event,) = journal.read(settings, topic="/tasks/delete").events
    assert (event.namespace, event.type_url) == ("default", "containerd.events.TaskDelete")
    value = base64.b64decode(event.value)
    assert cid.encode() in value and b"\x18\x07" in value  # exit_status (field 3) = 7


def test_delete_via_containerd_of_a_created_task(
    gen: Any, containerd: Containerd, node: Node
) -> None:
    """`gc --delete-created` while containerd answers and has the record: containerd's own
    Tasks.Delete removes the created task, its `runc init` and its shim."""
    cd = containerd
    (cid,) = cd.ids("createdrec")
    _created_task(node, cd, cid)
    init = Proc(cd.tasks()[cid][0])
    shim = Proc(cd.shim_pid(cid))
    settings = _settings(node)
    item = _item(settings, cid)
    assert item.task_status == "created", item
    decision = Decision(Kind.CREATED, Action.DELETE_VIA_CONTAINERD, "created, never started")
    result = _act(settings, item, decision)
    assert result.outcome == Outcome.DONE, result
    assert any("deleted through containerd's Tasks API" in n for n in result.notes), result
    assert init.gone() and shim.gone()
    assert not node.bundle(cid).exists() and not (RUNC_ROOT / "default" / cid).exists()
    assert cid not in cd.tasks() and cid in cd.containers()


def test_gc_stops_an_orphan_and_journals_an_exit(
    gen: Any, containerd: Containerd, node: Node, socket_dir_exclusive: None
) -> None:
    """The whole way through the command: `gc --stop-orphaned` plans, re-checks and acts on
    a running task and on an exited one whose records a client deleted; the exit goes into
    the events journal (`shimctl events`), a second run finds nothing of them."""
    cd = containerd
    orphan_id, exited_id = cd.ids("cliorphan", "cliexited")
    task = Proc(cd.run_container(orphan_id))
    cd.ctr(
        "run", "-d", "--null-io", "--rootfs", str(cd.rootfs), exited_id, "/bin/sh", "-c", "exit 5"
    )
    cd.wait_task(exited_id, "STOPPED")
    shims = [Proc(cd.shim_pid(orphan_id)), Proc(cd.shim_pid(exited_id))]
    with _without_record(node, cd, orphan_id), _without_record(node, cd, exited_id):
        proc = run_cli(node, "--json", "gc", "--min-age", "0", "--stop-orphaned")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = by_id(proc)
    orphan, exited = found[orphan_id], found[exited_id]
    assert (orphan["kind"], orphan["action"]) == ("orphaned", "stop-task"), orphan
    assert orphan["outcome"] in FINISHED, orphan
    assert (exited["kind"], exited["action"], exited["exit_status"]) == (
        "leaked",
        "delete-task",
        5,
    ), exited
    assert exited["outcome"] in FINISHED, exited
    assert task.gone() and all(shim.gone() for shim in shims)
    assert not node.bundle(orphan_id).exists() and not node.bundle(exited_id).exists()

    events = run_cli(node, "--json", "events", "--topic", "/tasks/delete")
    assert events.returncode == 0, events.stderr
    (event,) = json.loads(events.stdout)["result"]["events"]
    value = base64.b64decode(event["value"])
    assert exited_id.encode() in value and b"\x18\x05" in value  # exit_status (field 3) = 5

    again = by_id(run_cli(node, "--json", "gc", "--min-age", "0", "--stop-orphaned"))
    assert orphan_id not in again and exited_id not in again
