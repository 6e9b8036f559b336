"""Stale sockets in a private socket dir: which are provably this containerd's (named as its
shims derive them for a namespace/id it knows), which are foreign, and what gc decides."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shimctl.models.findings import Action, Kind, Mode
from shimctl.node import sockets
from shimctl.reconcile.evidence import Inventory, Leftover
from shimctl.reconcile.plan import Policy, plan_with
from shimctl.reconcile.stale_sockets import prove_with_records, stale_sockets
from shimctl.records.model import ContainerRecord, NamespaceRecords, OwnerRecords, Source
from shimctl.settings import Settings

ADDRESS = "/run/test-containerd/containerd.sock"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    # A socket path must fit in 108 bytes: a short dir of its own, not under tmp_path.
    socket_dir = Path(tempfile.mkdtemp(prefix="shimctl-s-", dir="/tmp"))
    try:
        yield Settings(
            root=tmp_path / "root", state=tmp_path / "state", address=ADDRESS, socket_dir=socket_dir
        )
    finally:
        shutil.rmtree(socket_dir)


def closed_socket(settings: Settings, address: str, namespace: str, id: str) -> Path:
    """A socket that listened, then closed (it refuses), named as a shim of the containerd at
    `address` derives it for `namespace`/`id`; a minute old."""
    path = Path(sockets.derive_address(address, namespace, id, settings.socket_dir)[7:])
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
    os.utime(path, (0, time.time() - 60), follow_symlinks=False)
    return path


def found(settings: Settings) -> dict[str, Leftover]:
    return {left.item.id: left for left in stale_sockets(settings, [], time.time())}


def test_only_sockets_derived_from_known_ids_are_this_containerds(settings: Settings) -> None:
    (settings.task_root / "default" / "work1").mkdir(parents=True)  # an orphan work dir
    (settings.task_state / "k8s.io" / ".hidden1").mkdir(parents=True)  # an interrupted delete
    ours_work = closed_socket(settings, ADDRESS, "default", "work1")
    ours_hidden = closed_socket(settings, ADDRESS, "k8s.io", "hidden1")
    other_containerd = closed_socket(settings, "/run/docker/containerd.sock", "default", "work1")
    unknown_id = closed_socket(settings, ADDRESS, "default", "never-seen")

    by_name = found(settings)

    assert set(by_name) == {p.name for p in (ours_work, ours_hidden, other_containerd, unknown_id)}
    assert not by_name[ours_work.name].foreign and "default/work1" in by_name[ours_work.name].reason
    assert not by_name[ours_hidden.name].foreign
    for foreign in (other_containerd, unknown_id):
        left = by_name[foreign.name]
        assert left.foreign and left.kind == Kind.STALE_SOCKET
        assert "another containerd's" in left.reason


def test_names_no_containerd_could_make_prove_nothing(settings: Settings) -> None:
    for name in (b"bad\xff", b"a" * 80, b"..x"):
        (settings.task_root / "default").mkdir(parents=True, exist_ok=True)
        os.mkdir(bytes(settings.task_root / "default") + b"/" + name)
    foreign = closed_socket(settings, ADDRESS, "default", "never-seen")
    assert [left.foreign for left in found(settings).values()] == [True], foreign


def test_a_socket_a_bundle_names_is_not_stale(settings: Settings) -> None:
    path = closed_socket(settings, ADDRESS, "default", "c1")
    bundle = settings.task_state / "default" / "c2"
    bundle.mkdir(parents=True)
    (bundle / "address").write_text(f"unix://{path}")
    assert found(settings) == {}


def test_containerds_records_prove_a_socket_whose_bundle_is_gone(settings: Settings) -> None:
    recorded = closed_socket(settings, ADDRESS, "k8s.io", "c9")
    stranger = closed_socket(settings, ADDRESS, "k8s.io", "c10")
    records = OwnerRecords(
        Source.METADB,
        namespaces={
            "k8s.io": NamespaceRecords(
                "k8s.io", containers={"c9": ContainerRecord("c9", "io.containerd.runc.v2")}
            )
        },
    )
    leftovers = stale_sockets(settings, [], time.time())
    assert all(left.foreign for left in leftovers)

    proven = {left.item.id: left for left in prove_with_records(settings, leftovers, records)}

    assert not proven[recorded.name].foreign and "k8s.io/c9" in proven[recorded.name].reason
    assert proven[stranger.name].foreign
    # Records that could not be read prove nothing.
    unknown = OwnerRecords(Source.UNKNOWN)
    assert prove_with_records(settings, leftovers, unknown) == leftovers


@pytest.mark.parametrize("mode", [Mode.LIST, Mode.GC])
def test_gc_removes_foreign_sockets_only_when_asked(settings: Settings, mode: Mode) -> None:
    (settings.task_root / "default" / "work1").mkdir(parents=True)
    ours = closed_socket(settings, ADDRESS, "default", "work1")
    foreign = closed_socket(settings, "/run/docker/containerd.sock", "default", "work1")
    inventory = Inventory([], stale_sockets(settings, [], time.time()))

    default = {p.item.id: p.decision for p in plan_with(inventory, mode, Policy())}
    asked = {
        p.item.id: p.decision
        for p in plan_with(inventory, mode, Policy(remove_foreign_sockets=True))
    }

    assert default[ours.name].action == Action.REMOVE
    assert default[foreign.name].action == Action.REPORT
    assert "gc --remove-foreign-sockets" in default[foreign.name].reason
    assert asked[foreign.name].action == Action.REMOVE
    assert asked[ours.name] == default[ours.name]
