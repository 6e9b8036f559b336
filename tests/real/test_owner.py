"""containerd's records as evidence: what `start` leaves for them and what gc reads."""

from __future__ import annotations

import pytest

from shimctl.node.bundle import SHIMCTL_STARTED
from shimctl.reconcile.collect import collect
from shimctl.records.model import Source
from shimctl.settings import Settings
from tests.support.helpers import Node, run_cli
from tests.support.tasks import start_shim

pytestmark = pytest.mark.real


def test_start_marks_its_bundle_and_the_evidence_sees_the_mark(node: Node) -> None:
    start_shim(node, "mine")
    try:
        _check_mark(node)
    finally:
        assert run_cli(node, "delete", "mine").returncode == 0


def _check_mark(node: Node) -> None:
    marker = node.bundle("mine") / SHIMCTL_STARTED
    assert marker.is_file() and marker.read_bytes() == b""
    inventory = collect(
        Settings(
            root=node.root, state=node.state, address=node.address, ttrpc_address=node.ttrpc_address
        )
    )
    (ev,) = [b for b in inventory.bundles if b.id == "mine"]
    assert ev.shimctl_started
    # No containerd answers at the node's address and its root has no meta.db: owner unknown.
    assert inventory.owner is not None and inventory.owner.source is Source.UNKNOWN
