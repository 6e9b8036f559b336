"""gc and list decide by containerd's own records, on every real containerd generation (1.6,
1.7, 2.1), each state made through that containerd and its API (tests/support/owner_states.py).

One containerd per generation, three phases over the same node:

1. containerd answers: ``list`` shows each bundle's owner and task status.
2. containerd stopped gracefully (its meta.db the only record) and one task's process killed
   while it is down (containerd #6771): ``list`` and ``gc`` decide from meta.db; the stopped
   task with no record is deleted, the orphan reported and stopped only with
   ``--stop-orphaned``, the ``created`` task reported, everything else kept.
3. containerd started again, then SIGKILLed, a task's process killed while it is down, and
   started again (#6771 as a crash); 1.6 keeps the stopped tasks, 1.7 and 2.1 clean them at
   their restart (asserted as facts of the generation). More states made: ``gc`` through the
   API deletes #6771's tasks through containerd on 1.6, the recordless stopped task straight
   through its shim, reports the orphan and the old ``created`` task and acts on them only
   with ``--stop-orphaned`` / ``--delete-created``; a last gc finds nothing to do.

Each gc's aftermath is checked on the node: garbage gone (bundle, shim PID, runc state), live
processes alive (PID and create time).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

import pytest

from shimctl.errors import ExitCode
from shimctl.records.model import Source
from tests.support import findings
from tests.support.containerd import Containerd
from tests.support.generations import Generation
from tests.support.helpers import wait_gone
from tests.support.owner_states import Made, OwnerStates, run_shimctl, wait_until

pytestmark = pytest.mark.real

GARBAGE_FOUND = int(ExitCode.GARBAGE_FOUND)  # `--exit-code`: garbage found, nothing failed
NS = "default"

Decisions = dict[str, tuple[str, str, str | None]]


def _result(proc: subprocess.CompletedProcess[str], code: int = 0) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stdout + proc.stderr
    result: dict[str, Any] = findings.document(proc)["result"]
    return result


def _mine(result: dict[str, Any], made: Iterable[Made]) -> dict[str, findings.Finding]:
    ids = {m.id for m in made}
    return {i: f for i, f in findings.by_id(result, namespace=NS).items() if i in ids}


def _decisions(found: dict[str, findings.Finding]) -> Decisions:
    return {i: (f["kind"], f["action"], f["owner"]) for i, f in found.items()}


def _outcomes(found: dict[str, findings.Finding]) -> dict[str, str | None]:
    return {i: f["outcome"] for i, f in found.items()}


def _gc(gen: Generation, cd: Containerd, *args: str, code: int = 0) -> dict[str, Any]:
    return _result(run_shimctl(gen, cd.node, "--json", "gc", "--min-age", "0", *args), code)


def _list(gen: Generation, cd: Containerd, *args: str, code: int = 0) -> dict[str, Any]:
    return _result(run_shimctl(gen, cd.node, "--json", "list", *args), code)


def _assert_gone(made: Made) -> None:
    assert wait_gone(made.shim_pid, made.shim_created, timeout=10), f"{made.id}: shim lives"
    if made.pid_created is not None:
        assert wait_gone(made.pid, made.pid_created, timeout=10), f"{made.id}: process lives"
    assert not made.bundle.exists(), f"{made.id}: bundle left"
    assert not made.runc_state.exists(), f"{made.id}: runc state left"


def _assert_alive(*made: Made) -> None:
    for m in made:
        assert m.shim_alive and m.bundle.is_dir(), f"{m.id}: shim or bundle gone"
        assert m.pid == 0 or m.process_alive, f"{m.id}: process {m.pid} gone"


def _nothing_to_do(found: dict[str, findings.Finding]) -> None:
    acting = {i: f["action"] for i, f in found.items() if f["action"] not in ("keep", "report")}
    assert acting == {}, acting


def test_gc_and_list_decide_by_containerds_records(
    gen: Generation, containerd: Containerd, socket_dir_exclusive: None
) -> None:
    cd = containerd
    states = OwnerStates(gen, cd)
    try:
        _phases(gen, cd, states)
    finally:
        states.close()


def _phases(gen: Generation, cd: Containerd, states: OwnerStates) -> None:
    # -- 1. containerd answers ----------------------------------------------------------------
    run, paused = states.running("run"), states.paused("paused")
    kept = states.stopped_with_record("kept", status=5)
    gone = states.stopped_no_record("gone", status=3)
    orphan = states.orphaned("orphan")
    mine = states.shimctl_started("mine")
    created = states.created("created")  # older than containerd's next start
    down = states.running("down")
    every = [run, paused, kept, gone, orphan, mine, created, down]

    listed = _list(gen, cd, "--exit-code", code=GARBAGE_FOUND)  # `gone` is garbage
    assert listed["owner"]["source"] == Source.API.value, listed["owner"]
    assert listed["owner"]["containerd_pid"] == cd.pid
    found = _mine(listed, every)
    assert {i: (f["owner"], f["task_status"]) for i, f in found.items()} == {
        run.id: ("tracked", "running"),
        paused.id: ("tracked", "paused"),
        kept.id: ("tracked", "stopped"),
        gone.id: ("no-record", "stopped"),
        orphan.id: ("no-record", "running"),
        mine.id: ("shimctl", "running"),
        created.id: ("tracked", "created"),
        down.id: ("tracked", "running"),
    }

    # -- 2. containerd stopped: meta.db ---------------------------------------------------------
    cd.stop()
    states.kill_while_down(down)  # containerd #6771: this exit is never delivered
    listed = _list(gen, cd)
    assert listed["owner"]["source"] == Source.METADB.value, listed["owner"]
    found = _mine(listed, every)
    assert {i: (f["owner"], f["task_status"]) for i, f in found.items()} == {
        run.id: ("record-only", "running"),
        paused.id: ("record-only", "paused"),
        kept.id: ("record-only", "stopped"),
        gone.id: ("no-record", "stopped"),
        orphan.id: ("no-record", "running"),
        mine.id: ("shimctl", "running"),
        created.id: ("record-only", "created"),
        down.id: ("record-only", "stopped"),
    }
    expected: Decisions = {
        run.id: ("running", "keep", "record-only"),
        paused.id: ("running", "keep", "record-only"),
        kept.id: ("stopped", "keep", "record-only"),
        gone.id: ("leaked", "delete-task", "no-record"),
        orphan.id: ("orphaned", "report", "no-record"),
        mine.id: ("running", "keep", "shimctl"),
        created.id: ("created", "report", "record-only"),
        # Exited, record present, containerd not answering: not provably garbage.
        down.id: ("stopped", "keep", "record-only"),
    }
    dry = _mine(_gc(gen, cd, "--dry-run"), every)
    assert _decisions(dry) == expected
    assert {i for i, o in _outcomes(dry).items() if o is not None} == {gone.id}
    assert dry[gone.id]["outcome"] == "dry-run"
    _assert_alive(*(m for m in every if m is not down))
    assert down.shim_alive and not down.process_alive

    found = _mine(_gc(gen, cd, "--exit-code", code=GARBAGE_FOUND), every)  # cleaned: still 12
    assert _decisions(found) == expected
    assert found[gone.id]["outcome"] == "done", found[gone.id]
    assert (found[gone.id]["exit_status"], found[down.id]["exit_status"]) == (3, 137)
    assert found[gone.id]["exited_at"] is not None
    assert all(o is None for i, o in _outcomes(found).items() if i != gone.id)
    _assert_gone(gone)
    _assert_alive(run, paused, kept, orphan, mine, created)

    every.remove(gone)
    del expected[gone.id]
    found = _mine(_gc(gen, cd, "--stop-orphaned"), every)
    assert _decisions(found) == {**expected, orphan.id: ("orphaned", "stop-task", "no-record")}
    assert found[orphan.id]["outcome"] == "done", found[orphan.id]
    _assert_gone(orphan)
    _assert_alive(run, paused, kept, mine, created)
    every.remove(orphan)
    del expected[orphan.id]
    again = _mine(_gc(gen, cd, "--stop-orphaned"), every)
    assert _decisions(again) == expected
    _nothing_to_do(again)

    # -- 3. containerd started again ----------------------------------------------------------
    cd.start()
    # containerd #6771 as a crash too: containerd SIGKILLed, the process killed while it is
    # down, containerd started again.
    crash = states.exited_while_down("crash")
    exited = (kept, down, crash)
    if gen.cleans_leaked_shims:
        # 1.7 and 2.1 load no shim whose task has no pids: the stopped tasks go at restart.
        for m in exited:
            assert f'msg="cleaning leaked shim process" id={m.id}' in cd.log_text()
            _assert_gone(m)
            assert m.id not in cd.tasks() and m.id in cd.containers()
        every = [m for m in every if m not in exited]
    else:
        # 1.6 keeps them: #6771's exit was never delivered, the task stays for ever.
        tasks = cd.tasks()
        assert [tasks[m.id][1] for m in exited] == ["STOPPED"] * 3, tasks
        assert "cleaning leaked shim" not in cd.log_text()
        every.append(crash)
    _assert_alive(run, paused, mine, created)

    gone2 = states.stopped_no_record("gone2", status=4)
    orphan2 = states.orphaned("orphan2")
    kept2 = states.stopped_with_record("kept2", status=6)  # containerd saw this exit
    young = states.created("young")  # created after containerd's start
    every += [gone2, orphan2, kept2, young]
    expected = {
        run.id: ("running", "keep", "tracked"),
        paused.id: ("running", "keep", "tracked"),
        mine.id: ("running", "keep", "shimctl"),
        created.id: ("created", "report", "tracked"),
        gone2.id: ("leaked", "delete-task", "no-record"),
        orphan2.id: ("orphaned", "report", "no-record"),
        kept2.id: ("stopped", "keep", "tracked"),
        young.id: ("running", "keep", "tracked"),
    }
    if not gen.cleans_leaked_shims:
        # Exited before this containerd started, with a record: 1.7's restart rule, applied
        # through containerd's Tasks API so that its view stays true.
        for m in exited:
            expected[m.id] = ("leaked", "delete-via-containerd", "tracked")
    acted = {i for i, (_, action, _) in expected.items() if action not in ("keep", "report")}

    dry = _mine(_gc(gen, cd, "--dry-run"), every)
    assert _decisions(dry) == expected
    assert {i for i, o in _outcomes(dry).items() if o is not None} == acted
    assert dry[young.id]["task_status"] == "created"

    found = _mine(_gc(gen, cd), every)
    assert _decisions(found) == expected
    assert {i: o for i, o in _outcomes(found).items() if o is not None} == dict.fromkeys(
        acted, "done"
    ), found
    assert found[gone2.id]["exit_status"] == 4
    for m in (gone2, *(exited if not gen.cleans_leaked_shims else ())):
        _assert_gone(m)
    if not gen.cleans_leaked_shims:
        # Deleted through containerd: its task list is true at once; the records stay.
        tasks = cd.tasks()
        assert not {m.id for m in exited} & set(tasks), tasks
        assert {m.id for m in exited} <= set(cd.containers())
    wait_until(lambda: gone2.id not in cd.tasks(), "containerd to see gone2's shim go")
    _assert_alive(run, paused, mine, created, orphan2, kept2, young)

    every = [m for m in every if m.id not in acted]
    expected = {i: d for i, d in expected.items() if i not in acted}
    found = _mine(_gc(gen, cd, "--stop-orphaned", "--delete-created"), every)
    assert _decisions(found) == {
        **expected,
        orphan2.id: ("orphaned", "stop-task", "no-record"),
        created.id: ("created", "delete-via-containerd", "tracked"),
    }
    assert (found[orphan2.id]["outcome"], found[created.id]["outcome"]) == ("done", "done")
    _assert_gone(orphan2)
    _assert_gone(created)
    assert created.id not in cd.tasks() and created.id in cd.containers()
    _assert_alive(run, paused, mine, kept2, young)

    every = [m for m in every if m not in (orphan2, created)]
    last = _mine(_gc(gen, cd, "--stop-orphaned", "--delete-created"), every)
    assert _decisions(last) == {
        i: d for i, d in expected.items() if i not in (orphan2.id, created.id)
    }
    _nothing_to_do(last)
    _assert_alive(run, paused, mine, kept2, young)
