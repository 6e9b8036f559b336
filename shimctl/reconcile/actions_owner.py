"""The actions that rest on containerd's records: delete-via-containerd (Tasks.Delete through
containerd's own API, records/tasks.py) and the re-check of "containerd has no record" that
every decision with ``recheck_no_record`` gets under the lock, right before it acts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from shimctl.errors import DeadlineExceeded, NotFound, Unavailable
from shimctl.faults import checkpoint
from shimctl.reconcile.actions_common import Notes, Scan, Skip, present_bundle
from shimctl.reconcile.actions_task import connection_of, still_as_seen
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision
from shimctl.settings import Settings
from shimctl.shim.task import TaskClient
from shimctl.steps import shimstop

if TYPE_CHECKING:
    from shimctl.node.bundle import Bundle
    from shimctl.records.tasks import DeleteAnswer


def record_now(settings: Settings, namespace: str, id: str) -> bool | None:
    """Has containerd a container record of `namespace`/`id` right now? While containerd
    accepts at its address, its answer to Containers.Get; while it does not, its meta.db.
    None when neither can tell (a bad answer, a lock held, an unreadable file): a containerd
    that accepts but answers badly is never replaced by its meta.db (records/owner.py)."""
    from shimctl.records.peer import dial

    timeout = settings.timeouts.load
    if dial(settings.address, timeout).accepted:
        from shimctl.records.tasks import has_container

        return has_container(settings.address, namespace, id, timeout)
    from shimctl.records.bolt import BoltError
    from shimctl.records.metadb import read_metadb

    try:
        records = read_metadb(settings.root, timeout=timeout)
    except BoltError:
        return None
    return id in records.namespace(namespace).containers


def recheck_no_record(settings: Settings, item: Item) -> None:
    """Skip unless containerd provably still has no record of the item."""
    found = record_now(settings, item.namespace, item.id)
    if found is None:
        raise Skip("containerd's records cannot be re-read: left")
    if found:
        raise Skip("containerd has a record of it now")


def delete_via_containerd(
    settings: Settings, item: Item, _decision: Decision, _shims: Scan
) -> Notes:
    bundle = present_bundle(settings, item)
    if item.task_status is not None:
        _still_as_seen(settings, item, bundle)
    t = settings.timeouts
    try:
        # containerd's Delete asks the shim to delete the task, then shuts the shim down and
        # removes the bundle: give it what shimctl would give those steps.
        answer = _delete(settings, item, t.cleanup + t.shutdown)
    except NotFound as err:
        raise Skip(f"containerd has no such task now: someone else deleted it ({err})") from None
    except Unavailable as err:
        raise Skip(f"containerd does not answer: nothing done ({err})") from None
    except DeadlineExceeded as err:
        raise Skip(
            f"containerd did not answer in time: its delete may still finish ({err})"
        ) from None
    checkpoint("gc:task-deleted")
    yield (
        f"deleted through containerd's Tasks API (pid {answer.pid}, exit status "
        f"{answer.exit_status})"
    )
    if os.path.lexists(bundle.path):
        yield "containerd left the bundle in place: it is containerd's to remove, not removed"


def _delete(settings: Settings, item: Item, timeout: float) -> DeleteAnswer:
    from shimctl.records.tasks import delete_task

    return delete_task(settings.address, item.namespace, item.id, timeout)


def _still_as_seen(settings: Settings, item: Item, bundle: Bundle) -> None:
    """The task's own shim (verified as this bundle's) still reports it as inspection saw it:
    stopped (an exit containerd never saw) or created. Closed before containerd is asked."""
    boot = connection_of(bundle, item)
    t = settings.timeouts
    try:
        with TaskClient.connect(
            boot.address, item.namespace, timeout=t.load, api_version=boot.version
        ) as client:
            shimstop.connect_verified(client, item.id, bundle.path, item.namespace, settings)
            still_as_seen(client, item, settings)
    except Unavailable as err:
        raise Skip(f"its shim no longer answers: left ({err})") from None
