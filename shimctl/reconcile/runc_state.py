"""runc state whose bundle is gone: a container no tool of containerd can see any more.

The runc shim keeps each container's runc state in ``<root>/<namespace>/<id>`` (root: the
runtime options' ``root``, saved in the bundle's options.json, else /run/containerd/runc:
cmd/containerd-shim-runc-v2/process/utils.go RuncRoot). When a bundle is deleted without the
runtime's ``delete`` (a leak cleaned badly, a containerd killed after ``runc create``), the
state dir, a waiting ``runc init`` and its cgroup outlive it, and with the bundle gone nothing
on the node lists them.

Only state provably of this containerd is a finding: runc records the bundle it was created
from as the ``bundle=<path>`` label of its config (runc's libcontainer/specconv), and that
path must be this state dir's bundle path for the id, and absent. Every other state dir
(another containerd's, Docker's, a test's) is not looked at further.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shimctl.errors import ShimctlError
from shimctl.models.findings import Kind
from shimctl.node import identifiers, processes
from shimctl.node.fs import read_small
from shimctl.reconcile.evidence import BundleEvidence, Item, Leftover, age_of
from shimctl.settings import Settings

DEFAULT_RUNC_ROOT = "/run/containerd/runc"
OPTIONS_JSON = "options.json"  # written by the runc shim into the bundle (container.go)
STATE_JSON = "state.json"
RUNC_BINARY = "runc"  # the options' default binary_name
OPTIONS_SAMPLE = 8  # options.json files read a namespace
MAX_STATE = 4 << 20  # a runc state.json is a few KiB; refuse anything absurd


def runc_roots(bundles: Iterable[BundleEvidence], scope: Iterable[str]) -> dict[Path, str]:
    """Each runc root dir (with its namespace part) to look in, and its namespace: the default
    root of every namespace in scope, and the roots the present bundles' options name."""
    roots = {Path(DEFAULT_RUNC_ROOT) / ns: ns for ns in scope}
    read: dict[str, int] = {}
    for ev in bundles:
        # A client gives all its containers the same options (Docker: <exec-root>/runtime-runc,
        # CRI: per runtime handler): a few bundles of a namespace tell its roots, and a node of
        # 800 bundles is not read 800 times more.
        if read.get(ev.namespace, 0) >= OPTIONS_SAMPLE:
            continue
        if ev.entries and OPTIONS_JSON in ev.entries and not ev.unsafe:
            read[ev.namespace] = read.get(ev.namespace, 0) + 1
            root = _options(ev.path / OPTIONS_JSON).get("root")
            if isinstance(root, str) and os.path.isabs(root):
                roots.setdefault(Path(root) / ev.namespace, ev.namespace)
    return roots


def orphan_runc_states(
    settings: Settings, bundles: list[BundleEvidence], scope: Iterable[str], now: float
) -> list[Leftover]:
    scope = list(scope)
    present = {(ev.namespace, ev.id) for ev in bundles}
    found: list[Leftover] = []
    for root, ns in runc_roots(bundles, scope).items():
        try:
            names = sorted(os.listdir(root))
        except OSError:
            continue
        for id in names:
            if (ns, id) in present or not identifiers.is_valid(id):
                continue
            left = _orphan(settings, root, ns, id, now)
            if left is not None:
                found.append(left)
    return found


def _orphan(settings: Settings, root: Path, ns: str, id: str, now: float) -> Leftover | None:
    state_file = root / id / STATE_JSON
    state = read_state(state_file)
    bundle = bundle_label(state)
    expected = settings.task_state / ns / id
    if bundle is None or os.path.normpath(bundle) != str(expected) or os.path.lexists(expected):
        return None
    pid = state.get("init_process_pid")
    ref = processes.ref_of(pid) if isinstance(pid, int) and pid > 0 else None
    what = f"its process {pid} still runs" if ref is not None else "its process is gone"
    item = Item(
        ns,
        id,
        str(root / id),
        age_seconds=round(age_of(state_file, now), 3),
        task_pids=(pid,) if ref is not None and isinstance(pid, int) else (),
        runtime=RUNC_BINARY,
    )
    reason = f"runc state of a container whose bundle is gone ({what}): nothing else sees it"
    return Leftover(item, Kind.ORPHAN_RUNC_STATE, reason, garbage=True)


def bundle_label(state: dict[str, Any]) -> str | None:
    """The bundle path runc recorded in its state's config labels ("bundle=<path>")."""
    config = state.get("config")
    labels = config.get("labels") if isinstance(config, dict) else None
    if not isinstance(labels, list):
        return None
    for label in labels:
        if isinstance(label, str) and label.startswith("bundle="):
            return label.removeprefix("bundle=")
    return None


def read_state(path: Path) -> dict[str, Any]:
    return _json(path)


def _options(path: Path) -> dict[str, Any]:
    return _json(path, limit=1 << 16)


def _json(path: Path, *, limit: int = MAX_STATE) -> dict[str, Any]:
    """A JSON object from ``path`` (not followed), or {} for anything unreadable or odd."""
    try:
        doc = json.loads(read_small(path, limit=limit))
    except (OSError, ValueError, ShimctlError):  # missing, a link, huge, not JSON
        return {}
    return doc if isinstance(doc, dict) else {}
