"""The actions on a task through its own shim (the bundle's address, the answering process
verified as this bundle's shim): delete-task, and stop-task, which first kills the task.

delete-task: Delete, Shutdown (unless the shim is shared), the runtime's `delete` verb when the
shim knew no task, bundle delete. stop-task: Kill(SIGKILL, all) of the init process, wait for
its exit (polling State, bounded by the cleanup timeout), then exactly delete-task. Both used
on a task containerd has no record of: no client of containerd can reach it any more
(containerd's Tasks API looks the container record up first: services/tasks/local.go at
containerd v1.6.20, getContainer).
"""

from __future__ import annotations

import contextlib
import signal
import time

from shimctl.errors import DeadlineExceeded, NotFound, Unavailable
from shimctl.faults import checkpoint
from shimctl.models.findings import Kind
from shimctl.node.bundle import Bundle
from shimctl.reconcile.actions_common import (
    Notes,
    Scan,
    Skip,
    dead_shim_gone,
    delete_verb,
    present_bundle,
    remove_dead_socket,
)
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap
from shimctl.shim.task import TaskClient, TaskState
from shimctl.steps import shimstop

# How often stop-task asks the shim whether the killed task has exited.
POLL_INTERVAL = 0.05
# The statuses a task stop-task may stop is in (a paused task is killed as it is).
STOPPABLE = frozenset({"created", "running", "paused"})


def delete_task(settings: Settings, item: Item, decision: Decision, _shims: Scan) -> Notes:
    yield from _through_shim(settings, item, decision, stop=False)


def stop_task(settings: Settings, item: Item, decision: Decision, _shims: Scan) -> Notes:
    yield from _through_shim(settings, item, decision, stop=True)


def _through_shim(settings: Settings, item: Item, decision: Decision, *, stop: bool) -> Notes:
    bundle = present_bundle(settings, item)
    try:
        yield from _on_the_shim(settings, item, decision, bundle, stop=stop)
    except Unavailable as err:
        # The shim died since inspection or while answering (containerd's ErrClosed; or a
        # crashed shimctl had already shut it down): clean it up as a dead one, re-verified.
        # The runtime's delete verb kills what is left of the task (runc delete --force).
        yield f"the shim went away ({err}); cleaned as dead"
        dead_shim_gone(settings, bundle, wait=settings.timeouts.shutdown)
        yield from delete_verb(settings, bundle)
    yield from remove_dead_socket(settings, item)
    bundle.delete()


def connection_of(bundle: Bundle, item: Item) -> Bootstrap:
    boot = bundle.connection()
    if boot is None and item.address is not None:
        # No connection file (a 2.x create interrupted after `start`): the address inspection
        # reached the shim at, derived from the shim's own argv.
        boot = Bootstrap(address=item.address, version=item.api_version or 2)
    if boot is None:
        raise Skip("the bundle no longer has an address")
    return boot


def _on_the_shim(
    settings: Settings, item: Item, decision: Decision, bundle: Bundle, *, stop: bool
) -> Notes:
    boot = connection_of(bundle, item)
    t = settings.timeouts
    with TaskClient.connect(
        boot.address, item.namespace, timeout=t.load, api_version=boot.version
    ) as client:
        info = shimstop.connect_verified(client, item.id, bundle.path, item.namespace, settings)
        if stop:
            state = still_stoppable(client, item, settings)
            yield from _kill_and_wait(client, item, state, settings)
        elif decision.kind == Kind.LEAKED and item.task_status is None:
            try:
                pids = client.pids(item.id, timeout=t.load)
                raise Skip(f"a task appeared since inspection (pids {pids})")
            except NotFound:
                pass
        elif decision.recheck_no_record and item.task_status is not None:
            still_as_seen(client, item, settings)
        exit_ = shimstop.delete_task(client, item.id, settings)
        checkpoint("gc:task-deleted")
        if exit_ is not None:
            yield f"task deleted (exit status {exit_.exit_status})"
        if decision.shutdown_shim and item.sandbox is None:
            said: list[str] = []
            shimstop.shutdown(client, item.id, info.shim_pid, settings, said)
            yield from said
            checkpoint("gc:shim-stopped")
        else:
            yield "shared shim: not shut down"
    if exit_ is None:
        # The shim knows no task, but the runtime may: containerd killed between `runc
        # create` and the shim's Create answer leaves a `runc init`, its runc state and cgroup.
        # containerd 1.7+ runs the delete verb when a shim goes (core/runtime/v2/shim.go,
        # cleanupAfterDeadShim); so do we, before the bundle goes, or nothing could see them.
        yield from delete_verb(settings, bundle)


def _state(client: TaskClient, item: Item, settings: Settings) -> TaskState:
    try:
        return client.state(item.id, timeout=settings.timeouts.load)
    except NotFound:
        raise Skip("its task is gone since inspection") from None


def still_as_seen(client: TaskClient, item: Item, settings: Settings) -> TaskState:
    """The task's State, if its status is still the one inspection saw; else Skip."""
    state = _state(client, item, settings)
    if state.status != item.task_status:
        raise Skip(f"its task is {state.status} now (was {item.task_status})")
    return state


def still_stoppable(client: TaskClient, item: Item, settings: Settings) -> TaskState:
    """The State of a task stop-task may kill: as inspection saw it (or created/running/paused
    when it saw none), with the same init process."""
    state = _state(client, item, settings)
    seen = item.task_status
    if state.status not in STOPPABLE or (seen is not None and state.status != seen):
        raise Skip(f"its task is {state.status} now (was {seen or 'running'})")
    if item.task_pids and state.pid and state.pid not in item.task_pids:
        raise Skip(f"its init process is {state.pid} now, not one of {list(item.task_pids)}")
    return state


def _kill_and_wait(client: TaskClient, item: Item, state: TaskState, settings: Settings) -> Notes:
    t = settings.timeouts
    # NotFound: it exited meanwhile ("process already finished"); its exit is waited for.
    with contextlib.suppress(NotFound):
        client.kill(item.id, signal.SIGKILL, all_processes=True, timeout=t.load)
    exited = _wait_exit(client, item, t.cleanup)
    yield (
        f"killed task {item.id} ({state.status}, init pid {state.pid}; SIGKILL to all its "
        f"processes): exit status {exited.exit_status}"
    )


def _wait_exit(client: TaskClient, item: Item, timeout: float) -> TaskState:
    """Poll State until the task is stopped; DeadlineExceeded after `timeout` seconds. (Not
    the Wait RPC: the shim ignores its deadline, and a call abandoned on the connection would
    leave a late answer on it.)"""
    deadline = time.monotonic() + timeout
    while True:
        state = client.state(item.id, timeout=max(deadline - time.monotonic(), 0.1))
        if state.status == "stopped":
            return state
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(
                f"task {item.id} is still {state.status} {timeout:g}s after SIGKILL"
            )
        time.sleep(POLL_INTERVAL)
