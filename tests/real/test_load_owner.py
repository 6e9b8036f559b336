"""containerd 1.7 as the oracle of `shimctl load` over the owner states (records as evidence):
on one state with containerd stopped, what ``load --dry-run`` would delete is exactly what a
1.7 restart deletes, and what it keeps is what 1.7 keeps (tests/support/owner_states.py makes
the states through 1.7 itself; containerd #6771 is a task killed while it is down)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import findings
from tests.support.containerd import Containerd, running_containerd
from tests.support.generations import Generation, generation
from tests.support.helpers import Node
from tests.support.owner_states import OwnerStates, run_shimctl
from tests.support.tree import snapshot

pytestmark = pytest.mark.real

NS = "default"


@pytest.fixture
def gen17() -> Generation:
    gen = generation("trixie")
    gen.require()
    if gen.major_minor != (1, 7):
        pytest.skip(f"trixie ships containerd {gen.version}, not 1.7")
    return gen


@pytest.fixture
def cd17(node: Node, gen17: Generation) -> Iterator[Containerd]:
    with running_containerd(node, **gen17.containerd_options()) as cd:
        yield cd


def _bundles(node: Node) -> set[str]:
    path = node.task_state / NS
    return {p.name for p in path.iterdir() if p.is_dir()} if path.is_dir() else set()


def test_load_decides_what_containerd_1_7_does_at_its_restart(
    gen17: Generation, cd17: Containerd
) -> None:
    cd, node = cd17, cd17.node
    states = OwnerStates(gen17, cd)
    try:
        made = [
            states.running("run"),
            states.paused("paused"),
            states.stopped_with_record("kept"),
            states.stopped_no_record("gone"),
            states.orphaned("orphan"),
            states.shimctl_started("mine"),
            states.created("created"),
        ]
        down = states.running("down")
        cd.stop()
        states.kill_while_down(down)  # containerd #6771
        ids = {m.id for m in (*made, down)}
        before = _bundles(node)
        assert ids <= before
        tree = snapshot(node.root, node.state)

        proc = run_shimctl(gen17, node, "--json", "-n", NS, "load", "--dry-run")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
        result = findings.document(proc)["result"]
        assert result["owner"]["source"] == "metadb", result["owner"]
        decided = {i: f for i, f in findings.by_id(result, namespace=NS).items() if i in ids}
        assert set(decided) == ids, sorted(ids - set(decided))
        deletes = {i for i, f in decided.items() if f["action"] not in ("keep", "report")}
        assert all(decided[i]["outcome"] == "dry-run" for i in deletes)
        assert snapshot(node.root, node.state) == tree, "load --dry-run changed the node"

        cd.start()  # the oracle: 1.7 loads its shims before it answers
        cleaned = before - _bundles(node)
        assert deletes == cleaned & ids, (
            f"shimctl load would delete {sorted(deletes)}, containerd 1.7 deleted "
            f"{sorted(cleaned & ids)}"
        )
        # What 1.7 did, independently of shimctl: every task with no pids went.
        assert cleaned & ids == {m.id for m in made if m.pid == 0} | {down.id}
        for i in deletes:
            assert f'msg="cleaning leaked shim process" id={i}' in cd.log_text(current=True)
        for m in made:
            if m.id not in deletes:
                assert m.process_alive and m.shim_alive, m.id
    finally:
        states.close()
