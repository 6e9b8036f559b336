"""Steps shared by `delete` and by load/gc actions: delete a task over ttrpc, shut a shim
down and make sure it is gone, run the shim binary's `delete` verb."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from shimctl.errors import DeadlineExceeded, NotFound, ShimctlError
from shimctl.node import identifiers, processes, sockets
from shimctl.node.bundle import SANDBOX, SHIM_BINARY_PATH, Bundle
from shimctl.node.runtimes import check_executable
from shimctl.node.spec import cri_sandbox_of
from shimctl.settings import Settings
from shimctl.shim import binary
from shimctl.shim.task import ConnectInfo, Exit, TaskClient
from shimctl.steps import access

# How long a shim gets to exit after Shutdown before shimctl checks why it lingers.
LINGER_CHECK = 0.5


def connect_verified(
    client: TaskClient, id: str, bundle_path: Path, namespace: str, settings: Settings
) -> ConnectInfo:
    """Connect, then prove the answering process is a shim of this containerd address and
    namespace serving this bundle (or its group): an address file that leads to another
    namespace's or another containerd's shim must never get that shim shut down."""
    info = client.connect_info(id, timeout=settings.timeouts.load)
    processes.verify_shim(
        info.shim_pid,
        namespace=namespace,
        address=settings.address,
        bundle=bundle_path,
        shared=True,  # a sandbox's shim answers for its pod's bundles
    )
    return info


def delete_task(client: TaskClient, id: str, settings: Settings) -> Exit | None:
    """The Delete RPC; None when the shim has no such task (never created, already deleted)."""
    try:
        return client.delete(id, timeout=settings.timeouts.cleanup)
    except NotFound:
        return None


def shutdown(
    client: TaskClient, id: str, shim_pid: int | None, settings: Settings, notes: list[str]
) -> bool:
    """Send Shutdown and wait for the shim to exit. True when the process is gone.

    A shim with no task that accepted Shutdown removes its socket and exits, but first waits
    for its event publisher; with nobody listening on containerd's ttrpc address that takes
    about 15 s. Such a shim (its socket gone, its events undeliverable) is stopped at once.
    """
    ref = processes.ref_of(shim_pid) if shim_pid else None
    client.shutdown(id, timeout=settings.timeouts.shutdown)
    first_wait = min(LINGER_CHECK, settings.timeouts.shutdown)
    if ref is None or processes.wait_gone(ref, first_wait):
        return True
    if sockets.address_state(client.ttrpc.address) is sockets.SocketState.LISTENING:
        # A shim that accepts Shutdown removes its socket first: this one declined, because
        # it still holds other containers.
        notes.append(f"shim {ref.pid} keeps running: it still serves other tasks")
        return False
    events_dead = sockets.probe_address(settings.ttrpc_address) is not (
        sockets.SocketState.LISTENING
    )
    lingering = processes.shim_process(ref)
    # Only this bundle's own shim (by its argv) is stopped: Connect's pid is the shim's word,
    # and a shim that named another process must not get that one killed.
    own = lingering is not None and processes.is_shim_of(
        lingering,
        namespace=client.namespace,
        address=settings.address,
        bundle=settings.task_state / client.namespace / id,
    )
    if events_dead and own:
        processes.send_signal(ref, signal.SIGKILL)
        if processes.wait_gone(ref, settings.timeouts.shutdown):
            notes.append(
                f"shim {ref.pid} lingered after Shutdown (no event receiver at "
                f"{settings.ttrpc_address}): stopped"
            )
            return True
    elif processes.wait_gone(ref, settings.timeouts.shutdown - first_wait):
        return True
    notes.append(f"shim {ref.pid} still runs after Shutdown")
    return False


def run_delete_verb(
    settings: Settings, bundle: Bundle, notes: list[str], *, pod_binary: str | None = None
) -> Exit | None:
    """The shim binary's `delete` verb for a shim that is gone. Its failure is only noted: the
    runc shim's verb fails for a task that was never created (no `runtime` file), and the
    caller has verified the shim is gone, so the bundle still goes. A verb cut short by its
    timeout raises instead (the bundle stays). `pod_binary`: the pod's
    shim binary, read by the caller while the sandbox bundle was still there."""
    bundle.check_safe()
    try:
        shim_binary = (
            bundle.read_text(SHIM_BINARY_PATH)
            or pod_binary
            or _sandbox_shim_binary(settings, bundle)
        )
    except ShimctlError as err:
        notes.append(f"unreadable shim-binary-path ({err}): the delete verb was not run")
        return None
    if shim_binary is None:
        notes.append("no shim-binary-path: the delete verb was not run")
        return None
    if not os.path.isabs(shim_binary):
        # Run with the bundle as cwd, a relative path would name a file inside the bundle.
        notes.append(
            f"shim-binary-path {shim_binary!r} is not absolute: the delete verb was not run"
        )
        return None
    try:
        check_executable(shim_binary)
        shim = access.shim_binary(settings, shim_binary, bundle.namespace, bundle.id)
        exit_ = binary.run_delete(shim, bundle.path, timeout=settings.timeouts.cleanup)
    except DeadlineExceeded as err:
        # Cut short, the verb may have left its container (a `runc init`, runc state, a
        # cgroup) half deleted: the bundle must stay, so the next run can see it and retry.
        raise DeadlineExceeded(
            f"the delete verb did not finish ({err}): bundle kept for the next run",
            hint="raise --timeout (the cleanup timeout) and run again",
        ) from None
    except ShimctlError as err:
        notes.append(f"delete verb failed: {err}")
        return None
    notes.append(f"delete verb: exit status {exit_.exit_status}, pid {exit_.pid}")
    return exit_


def _sandbox_shim_binary(settings: Settings, bundle: Bundle) -> str | None:
    """containerd 2.x writes no shim-binary-path into a pod member's bundle: the member runs
    on its sandbox's shim, so the sandbox bundle's shim binary is the member's runtime."""
    # 1.6/1.7 write no `sandbox` file: the CRI annotations name the pod.
    sandbox = bundle.read_text(SANDBOX) or cri_sandbox_of(bundle.path, bundle.id)
    if sandbox is None or sandbox == bundle.id or not identifiers.is_valid(sandbox):
        return None
    owner = Bundle.locate(settings.task_state, settings.task_root, bundle.namespace, sandbox)
    owner.check_safe()
    return owner.read_text(SHIM_BINARY_PATH)
