"""Hostile shims (fake shim processes, tests/support/fakeshim.py) under list, load, gc and
delete: each
call ends by its deadline with a classified error, the other bundles are still handled, and K
hung shims are probed concurrently (counted by the fakes themselves, not timed: timings are
in benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from shimctl.errors import ExitCode
from tests.support.helpers import Node, wait_gone
from tests.support.safetykit import (
    FakeProc,
    Fakes,
    backdate,
    clean_exit,
    cli,
    derived_socket,
    findings,
    make_bundle,
)

NS = "default"
T = ("--timeout", "2")

# Faults on every call (Connect first): what `list` makes of each.
ON_CONNECT = {
    "silent": "hung",
    "drip": "hung",
    "garbage": "hung",
    "oversized": "hung",
    "huge-header": "hung",
    "wrong-stream": "hung",
    "wrong-type": "hung",
    "bad-envelope": "hung",
    "close-mid": "hung",  # the connection ends, but its process lives
    "die": "hung",
    "exit": "dead",  # the process ends mid-call
}
# Faults on one later call: Connect answers.
LATER = {
    "pids-silent": ({"Pids": "silent"}, "hung"),
    "pids-garbage": ({"Pids": "garbage"}, "hung"),
    "pids-exit": ({"Pids": "exit"}, "dead"),
    "delete-exit": ({"Delete": "exit"}, "leaked"),
    "delete-silent": ({"Delete": "silent"}, "leaked"),
    "delete-garbage": ({"Delete": "garbage"}, "leaked"),
    "shutdown-exit": ({"Shutdown": "exit"}, "leaked"),
    "shutdown-silent": ({"Shutdown": "silent"}, "leaked"),
}


def fake_bundle(fakes: Fakes, task_id: str, faults: dict[str, str], **kw: object) -> FakeProc:
    node = fakes.node
    make_bundle(node, task_id, address=f"unix://{derived_socket(node, task_id)}")
    proc = fakes.spawn(task_id, faults=faults, **kw)  # type: ignore[arg-type]
    backdate(node.bundle(task_id), 600)
    return proc


@pytest.fixture
def scene(node: Node, fakes: Fakes) -> dict[str, FakeProc]:
    procs: dict[str, FakeProc] = {}
    for fault in ON_CONNECT:
        procs[f"conn-{fault}"] = fake_bundle(fakes, f"conn-{fault}", {"*": fault})
    for name, (faults, _) in LATER.items():
        procs[name] = fake_bundle(fakes, name, faults)
    procs["healthy"] = fake_bundle(fakes, "healthy", {})
    make_bundle(node, "deadb", address=f"unix://{derived_socket(node, 'deadb')}", age=600)
    return procs


def expected_kinds() -> dict[str, str]:
    kinds = {f"conn-{fault}": kind for fault, kind in ON_CONNECT.items()}
    kinds.update({name: kind for name, (_, kind) in LATER.items()})
    kinds.update({"healthy": "leaked", "deadb": "dead"})
    return kinds


def test_list_classifies_every_hostile_shim_and_ends(
    node: Node, scene: dict[str, FakeProc]
) -> None:
    proc = cli(node, "-n", NS, *T, "list", "--json")
    clean_exit(proc, 0)
    found = {key[1]: f for key, f in findings(proc).items()}
    assert {i: f["kind"] for i, f in found.items()} == expected_kinds()
    for task_id, f in found.items():
        if f["kind"] == "hung":
            # The reason names what happened: a deadline, a protocol error, a closed connection
            # or an oversized message, not just "failed".
            reason = str(f["reason"])
            assert any(
                word in reason
                for word in ("deadline", "protocol", "closed", "exceed maximum", "refuses")
            ), (task_id, reason)
    # Nothing was changed or signalled by a list; only the fakes that exit by design are gone.
    for task_id, shim in scene.items():
        assert shim.alive() == (task_id not in ("conn-exit", "pids-exit")), task_id
    assert all(node.bundle(i).is_dir() for i in expected_kinds())


@pytest.mark.parametrize("command", ["gc", "load"])
def test_gc_and_load_go_on_past_hostile_shims(
    node: Node, scene: dict[str, FakeProc], command: str
) -> None:
    args = ("gc", "--min-age", "0") if command == "gc" else ("load",)
    proc = cli(node, "-n", NS, *T, *args, "--json")
    # some actions fail (the shims that hang or lie on Delete/Shutdown)
    clean_exit(proc, ExitCode.ACTIONS_FAILED)
    found = {key[1]: f for key, f in findings(proc).items()}
    cleaned = ["healthy", "deadb", "conn-exit", "pids-exit", "delete-exit", "shutdown-exit"]
    failed = ["delete-silent", "delete-garbage", "shutdown-silent"]
    for task_id in cleaned:
        assert found[task_id]["outcome"] == "done", (task_id, found[task_id])
        assert not os.path.lexists(node.bundle(task_id)), task_id
        assert not os.path.lexists(node.workdir(task_id)), task_id
        # A shim that died mid-call leaves its socket: it is removed with the bundle.
        assert not os.path.lexists(derived_socket(node, task_id)), task_id
        if task_id in scene:
            assert wait_gone(scene[task_id].pid, scene[task_id].create_time), task_id
    for task_id in failed:
        assert found[task_id]["outcome"] == "failed", found[task_id]
        error = str(found[task_id]["error"])
        assert "deadline" in error or "protocol" in error or "ttrpc" in error, error
        assert node.bundle(task_id).is_dir()
    for task_id, f in found.items():
        if f["kind"] == "hung":
            assert f["action"] == "report" and f["outcome"] is None, f
            assert scene[task_id].alive() and node.bundle(task_id).is_dir()


def test_gc_kill_hung_stops_exactly_the_hung_shims(node: Node, scene: dict[str, FakeProc]) -> None:
    proc = cli(node, "-n", NS, *T, "gc", "--min-age", "0", "--kill-hung", "--json")
    clean_exit(proc, ExitCode.ACTIONS_FAILED)
    found = {key[1]: f for key, f in findings(proc).items()}
    hung = [i for i, kind in expected_kinds().items() if kind == "hung"]
    for task_id in hung:
        assert found[task_id]["action"] == "kill" and found[task_id]["outcome"] == "done", found[
            task_id
        ]
        assert wait_gone(scene[task_id].pid, scene[task_id].create_time)
        assert not os.path.lexists(node.bundle(task_id)), task_id
        assert not os.path.lexists(derived_socket(node, task_id)), task_id
    # Shims that answered Connect but fail Delete/Shutdown are not "hung": never killed by gc.
    for task_id in ("delete-silent", "delete-garbage", "shutdown-silent"):
        assert scene[task_id].alive(), task_id


@pytest.mark.parametrize(
    ("task_id", "plain", "forced"),
    [
        ("conn-silent", 5, 0),
        ("conn-drip", 5, 0),
        ("conn-garbage", 9, 0),
        ("conn-wrong-stream", 9, 0),
        ("conn-close-mid", 5, 0),
        ("conn-exit", 0, None),
        ("delete-exit", 0, None),
        ("delete-silent", 5, 0),
        ("shutdown-exit", 0, None),
        ("healthy", 0, None),
    ],
)
def test_delete_of_a_hostile_shim(
    node: Node, fakes: Fakes, task_id: str, plain: int, forced: int | None
) -> None:
    faults = dict(
        {f"conn-{f}": {"*": f} for f in ON_CONNECT}
        | {name: spec for name, (spec, _) in LATER.items()}
        | {"healthy": {}}
    )[task_id]
    shim = fake_bundle(fakes, task_id, faults)
    proc = cli(node, *T, "delete", task_id)
    clean_exit(proc, plain)
    if plain != 0:
        assert node.bundle(task_id).is_dir() and shim.alive()
        assert forced is not None
        if plain == 5:
            assert "--force" in proc.stderr
        proc = cli(node, *T, "delete", task_id, "--force", "--json")
        clean_exit(proc, forced)
    assert not os.path.lexists(node.bundle(task_id))
    assert not os.path.lexists(node.workdir(task_id))
    assert wait_gone(shim.pid, shim.create_time)
    assert not os.path.lexists(derived_socket(node, task_id))


def test_force_escalates_to_sigkill(node: Node, fakes: Fakes) -> None:
    # containerd's shutdown timeout is the grace between SIGTERM and SIGKILL.
    (node.base / "no-config.toml").write_text(
        '[timeouts]\n"io.containerd.timeout.shim.shutdown" = "1s"\n'
    )
    shim = fake_bundle(fakes, "stubborn", {"*": "silent"}, ignore_term=True, child=True)
    proc = cli(node, *T, "delete", "stubborn", "--force", "--json")
    clean_exit(proc, 0)
    assert wait_gone(shim.pid, shim.create_time) and wait_gone(shim.child, None)
    assert shim.popen.wait(timeout=5) == -9


def test_hung_shims_are_probed_concurrently(node: Node, fakes: Fakes, tmp_path: Path) -> None:
    """K shims that never answer: every one is in a hung call at the same moment, so the run
    costs about one timeout, not K. Counted by the fakes (marker files), not timed."""
    markers = tmp_path / "markers"
    markers.mkdir()
    k = 8
    procs = [
        fake_bundle(fakes, f"hung{i}", {"Connect": "silent"}, marker_dir=markers) for i in range(k)
    ]
    fake_bundle(fakes, "healthy", {})
    for args in (("list",), ("gc", "--min-age", "0")):
        for stale in markers.iterdir():
            stale.unlink()
        proc = cli(node, "-n", NS, "--timeout", "2", *args, "--json")
        clean_exit(proc, 0)
        peaks = [int((markers / f"hung{i}.peak").read_text()) for i in range(k)]
        assert max(peaks) == k, peaks
        # Every hung call was given up (the fakes see the connection close and say so).
        give_up = time.monotonic() + 10
        while list(markers.glob("*.open")) and time.monotonic() < give_up:
            time.sleep(0.05)
        assert not list(markers.glob("*.open"))
    assert all(p.alive() for p in procs)
    assert not node.bundle("healthy").exists()


def test_a_shim_that_exits_while_probed_is_dead_not_unsafe(node: Node, fakes: Fakes) -> None:
    """A shim caught exiting (a concurrent delete shut it down) answers Connect, then its pid
    no longer names a live shim. With its socket gone that is a dead shim, not one that lies
    about who it is; with its socket still listening it stays unsafe."""
    reaped = subprocess.Popen(["true"])  # a PID that no longer runs
    reaped.wait()
    exiting = fake_bundle(fakes, "exiting", {"Connect": "vanish"}, pid=reaped.pid)
    liar = fake_bundle(fakes, "liar", {}, pid=reaped.pid)

    proc = cli(node, "-n", NS, *T, "list", "--json")
    clean_exit(proc, 0)
    found = {key[1]: f for key, f in findings(proc).items()}
    assert found["exiting"]["kind"] == "dead", found["exiting"]
    assert "exited while probed" in str(found["exiting"]["reason"]), found["exiting"]
    assert found["liar"]["kind"] == "unsafe", found["liar"]
    assert liar.alive()

    # The fake ends when the prober hangs up; gc then cleans its bundle as a dead shim's.
    assert wait_gone(exiting.pid, exiting.create_time)
    proc = cli(node, "-n", NS, *T, "gc", "--min-age", "0", "--json")
    clean_exit(proc, 0)
    found = {key[1]: f for key, f in findings(proc).items()}
    assert found["exiting"]["outcome"] == "done", found["exiting"]
    assert not os.path.lexists(node.bundle("exiting"))
    assert not os.path.lexists(node.workdir("exiting"))
    assert node.bundle("liar").is_dir() and liar.alive()
