"""Live shim processes, from the /proc scan made beside the probes: attach them to bundles
whose shim did not answer (a bundle with a live shim is never judged dead), and report shim
processes of this containerd address whose bundle is gone."""

from __future__ import annotations

import os
from dataclasses import replace

from shimctl.errors import NotFound, ShimctlError
from shimctl.models.findings import Kind, ProbeResult
from shimctl.node import identifiers, processes, sockets
from shimctl.node.spec import bundle_annotations, shim_group
from shimctl.reconcile.evidence import BundleEvidence, Item, Leftover, live_container_pid, locate
from shimctl.reconcile.probe import Known, probe_derived
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap


def attach_processes(settings: Settings, bundles: list[BundleEvidence], known: Known) -> None:
    """For bundles whose shim did not answer, find a live shim process that belongs to them.
    A bundle with no connection file (containerd 2.x writes bootstrap.json only after `start`
    returns, so a crash in between leaves none) is probed again at the address its live shim
    derives from its argv."""
    silent = [ev for ev in bundles if ev.probe != ProbeResult.ANSWERED]
    candidates = _by_id_and_cwd(known) if silent else {}
    for ev in silent:
        # Only a shim with this bundle's id or cwd can be its own (shim_mismatch); looked up,
        # not searched for, so many silent bundles beside many shims stay linear.
        found = candidates.get(ev.path.name, []) + candidates.get(str(ev.path), [])
        for _, shim in sorted(found, key=lambda pair: pair[0]):
            mine = processes.is_shim_of(
                shim, namespace=ev.namespace, address=settings.address, bundle=ev.path
            )
            if mine and processes.still_alive(shim.ref):  # the scan ran beside the probes
                ev.live_process = shim
                ev.shim_pid = shim.ref.pid
                break
        if ev.live_process is None and (pid := live_container_pid(ev.path)) is not None:
            # Its shim is dead but its container still runs: the delete verb will kill it.
            ev.task_pids = [pid]
    lost = [ev for ev in silent if ev.boot is None and ev.live_process is not None]
    for ev in lost:
        assert ev.live_process is not None
        ev.boot = Bootstrap(address=shim_address(settings, ev.live_process))
        ev.derived_address = True
    if lost:
        # Rare (a create interrupted after the shim started): one thread each, so hung ones
        # cost one timeout together.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(64, len(lost))) as threads:
            list(threads.map(lambda ev: probe_derived(settings, ev, known), lost))


def _by_id_and_cwd(known: Known) -> dict[str, list[tuple[int, processes.ShimProcess]]]:
    """The scanned shims, with their place in the scan, by their -id flag and by their cwd
    (a bundle path): the first in scan order is the one a search would find. Ids never
    contain a slash and bundle paths always do, so one dict serves both."""
    index: dict[str, list[tuple[int, processes.ShimProcess]]] = {}
    for place, shim in enumerate(known.values()):
        index.setdefault(shim.id, []).append((place, shim))
        if shim.cwd is not None and shim.cwd != shim.id:
            index.setdefault(shim.cwd, []).append((place, shim))
    return index


def shim_address(settings: Settings, shim: processes.ShimProcess) -> str:
    """The socket address a runc-style shim derives for itself: from containerd's address,
    its namespace and its grouping key (its bundle's group annotation, else its id)."""
    key = shim_group(bundle_annotations(shim.cwd), shim.id) if shim.cwd else shim.id
    return sockets.derive_address(settings.address, shim.namespace, key, settings.socket_dir)


def orphan_processes(
    settings: Settings,
    bundles: list[BundleEvidence],
    scope: list[str],
    now: float,
    shims: list[processes.ShimProcess],
) -> list[Leftover]:
    """Shim processes of this containerd address whose bundle is gone."""
    known_pids = {ev.shim_pid for ev in bundles if ev.shim_pid}
    found: list[Leftover] = []
    for shim in shims:
        if shim.ref.pid in known_pids or shim.namespace not in scope:
            continue
        if not identifiers.is_valid(shim.namespace) or not identifiers.is_valid(shim.id):
            continue
        bundle = locate(settings, shim.namespace, shim.id)
        if bundle.exists() or (shim.cwd is not None and os.path.isdir(shim.cwd)):
            continue
        address = sockets.derive_address(
            settings.address, shim.namespace, shim.id, settings.socket_dir
        )
        item = Item(
            shim.namespace,
            shim.id,
            str(bundle.path),
            age_seconds=max(0.0, now - shim.ref.create_time),
            shim_pid=shim.ref.pid,
            address=address,
            shim=shim.ref,
        )
        found.append(_probe_orphan(settings, item, shim))
    return found


def _probe_orphan(settings: Settings, item: Item, shim: processes.ShimProcess) -> Leftover:
    """Prove the orphan answers on the socket derived from its argv, and see if it has a task:
    only a verified shim with no task is garbage (shut down by gc)."""
    from shimctl.shim.task import TaskClient

    assert item.address is not None
    reason = "shim process whose bundle is gone"
    timeout = settings.timeouts.load
    try:
        with TaskClient.connect(item.address, shim.namespace, timeout=timeout) as client:
            info = client.negotiate(shim.id, timeout=timeout)
            item = replace(item, api_version=client.api_version, protocol="ttrpc")
            if info.shim_pid != shim.ref.pid:
                reason += f"; its socket is served by pid {info.shim_pid}, not by it"
                return Leftover(item, Kind.ORPHAN_PROCESS, reason, garbage=False)
            try:
                pids = client.pids(shim.id, timeout=timeout)
                item = replace(item, task_pids=tuple(pids))
                reason += "; it still has a task"
                return Leftover(item, Kind.ORPHAN_PROCESS, reason, garbage=False)
            except NotFound:
                pass
    except ShimctlError as err:
        reason += f"; it does not answer on {item.address}: {err}"
        return Leftover(item, Kind.ORPHAN_PROCESS, reason, garbage=False)
    return Leftover(item, Kind.ORPHAN_PROCESS, reason + "; answers, no task", garbage=True)
