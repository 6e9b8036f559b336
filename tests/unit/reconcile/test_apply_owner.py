"""apply's owner actions on hand-built items and decisions, against fake containerds for what
a real one does not show on demand (tests/real/test_owner_actions.py has the real ones):
delete-via-containerd when containerd answers NotFound, refuses, hangs, or leaves the bundle;
the no-record re-check through Containers.Get and through meta.db (missing, locked, with and
without the record). What is asserted is what is left: the bundle, the calls the fakes saw."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import timestamp_pb2

from shimctl.models.findings import Action, Kind, Outcome
from shimctl.reconcile.apply import ActionResult, apply
from shimctl.reconcile.evidence import Item
from shimctl.reconcile.plan import Decision, Planned
from shimctl.records.metadb import METADATA_DIR, METADATA_FILE
from shimctl.records.proto.api.services.containers.v1 import containers_pb2
from shimctl.records.proto.api.services.tasks.v1 import tasks_pb2
from shimctl.records.tasks import CONTAINERS_GET, TASKS_DELETE
from shimctl.settings import Settings, Timeouts
from tests.support.fake_containerd_api import (
    SLACK,
    Handler,
    grpc_fake,
    raw_fake,
    sleeper,
    status,
)
from tests.unit.records.boltwriter import Tree, build
from tests.unit.records.test_metadb import container

NS = "default"
ID = "c1"
TIMEOUTS = Timeouts(load=0.5, cleanup=0.5, shutdown=0.5)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(
        root=tmp_path / "root",
        state=tmp_path / "state",
        address=str(tmp_path / "c.sock"),
        timeouts=TIMEOUTS,
        socket_dir=tmp_path / "s",
    )
    bundle = s.task_state / NS / ID
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text("{}")
    (s.root).mkdir()
    return s


def _bundle(settings: Settings) -> Path:
    return settings.task_state / NS / ID


def _apply(settings: Settings, item: Item, decision: Decision) -> ActionResult:
    (result,) = apply(settings, [Planned(item, decision)], dry_run=False)
    assert result is not None
    return result


def _calls(seen: list[tuple[str, str]]) -> Handler:
    """Tasks.Delete answering like containerd: the bundle removed, the exit returned."""

    def handler(raw: bytes, ctx: Any) -> bytes:
        request = tasks_pb2.DeleteTaskRequest.FromString(raw)
        seen.append((dict(ctx.invocation_metadata())["containerd-namespace"], request.container_id))
        return tasks_pb2.DeleteResponse(
            pid=4242, exit_status=3, exited_at=timestamp_pb2.Timestamp(seconds=1_700_000_000)
        ).SerializeToString()

    return handler


VIA = Decision(Kind.LEAKED, Action.DELETE_VIA_CONTAINERD, "exited while containerd was down")
# No task status: the shim's State re-check is the real tests' (it needs a real shim).
ITEM = Item(NS, ID, "/unused", age_seconds=900.0)


# -- delete-via-containerd ------------------------------------------------------------------


def test_delete_via_containerd_done_and_the_bundle_left_is_noted(settings: Settings) -> None:
    seen: list[tuple[str, str]] = []
    with grpc_fake(Path(settings.address), {TASKS_DELETE: _calls(seen)}):
        result = _apply(settings, ITEM, VIA)
    assert seen == [(NS, ID)]
    assert result.outcome == Outcome.DONE, result
    assert "deleted through containerd's Tasks API (pid 4242, exit status 3)" in result.notes
    # The fake removed nothing: the bundle is containerd's to remove, shimctl leaves it.
    assert _bundle(settings).is_dir()
    assert any("containerd left the bundle" in n for n in result.notes), result.notes


def test_delete_via_containerd_when_containerd_removes_the_bundle(settings: Settings) -> None:
    seen: list[tuple[str, str]] = []
    answer = _calls(seen)

    def delete_like_containerd(raw: bytes, ctx: Any) -> bytes:
        os.unlink(_bundle(settings) / "config.json")
        os.rmdir(_bundle(settings))
        return answer(raw, ctx)

    with grpc_fake(Path(settings.address), {TASKS_DELETE: delete_like_containerd}):
        result = _apply(settings, ITEM, VIA)
    assert result.outcome == Outcome.DONE and seen == [(NS, ID)]
    assert not any("left the bundle" in n for n in result.notes), result.notes


@pytest.mark.parametrize(
    ("handler", "note"),
    [
        (status(grpc.StatusCode.NOT_FOUND, "task c1 not found"), "someone else deleted it"),
        (status(grpc.StatusCode.UNAVAILABLE, "shutting down"), "containerd does not answer"),
        (sleeper(5), "did not answer in time"),
    ],
    ids=["not-found", "unavailable", "hangs"],
)
def test_delete_via_containerd_skipped(settings: Settings, handler: Handler, note: str) -> None:
    start = time.monotonic()
    with grpc_fake(Path(settings.address), {TASKS_DELETE: handler}):
        result = _apply(settings, ITEM, VIA)
    elapsed = time.monotonic() - start
    assert result.outcome == Outcome.SKIPPED, result
    assert any(note in n for n in result.notes), result.notes
    assert _bundle(settings).is_dir() and (_bundle(settings) / "config.json").exists()
    assert elapsed < TIMEOUTS.cleanup + TIMEOUTS.shutdown + 2 * SLACK


def test_delete_via_containerd_never_falls_back_to_the_shim(settings: Settings) -> None:
    """Nothing at containerd's address: nothing is done, the shim is not dialled."""
    shim = Path(settings.address).with_name("shim.sock")
    accepted: list[int] = []
    with raw_fake(shim, lambda _conn: accepted.append(1)):
        item = Item(NS, ID, "/unused", age_seconds=900.0, address=f"unix://{shim}")
        result = _apply(settings, item, VIA)
    assert result.outcome == Outcome.SKIPPED
    assert any("containerd does not answer: nothing done" in n for n in result.notes)
    assert accepted == [] and _bundle(settings).is_dir()


def test_delete_via_containerd_refused_is_a_failure(settings: Settings) -> None:
    handler = status(grpc.StatusCode.FAILED_PRECONDITION, "task must be stopped")
    with grpc_fake(Path(settings.address), {TASKS_DELETE: handler}):
        result = _apply(settings, ITEM, VIA)
    assert result.outcome == Outcome.FAILED and "task must be stopped" in (result.error or "")
    assert _bundle(settings).is_dir()


# -- the no-record re-check -----------------------------------------------------------------

NO_RECORD = Decision(
    Kind.LEAKED, Action.DELETE_TASK, "exited, containerd has no record", recheck_no_record=True
)


@pytest.fixture
def shim(settings: Settings) -> Iterator[tuple[Item, list[int]]]:
    """A listener where the item's shim would be: it counts the connections the action makes
    (the re-check runs before any)."""
    path = Path(settings.address).with_name("shim.sock")
    accepted: list[int] = []

    def on_accept(conn: socket.socket) -> None:
        accepted.append(1)
        conn.close()

    with raw_fake(path, on_accept):
        item = Item(NS, ID, "/unused", age_seconds=900.0, address=f"unix://{path}", api_version=2)
        yield item, accepted


def _getter(known: set[str]) -> Handler:
    def handler(raw: bytes, ctx: Any) -> bytes:
        request = containers_pb2.GetContainerRequest.FromString(raw)
        if request.id not in known:
            ctx.abort(grpc.StatusCode.NOT_FOUND, "not found")
        reply = containers_pb2.GetContainerResponse(
            container=containers_pb2.Container(id=request.id)
        )
        return reply.SerializeToString()

    return handler


def _metadb(settings: Settings, ids: list[str]) -> Path:
    (settings.root / METADATA_DIR).mkdir()
    containers: Tree = {i.encode(): container(b"io.containerd.runc.v2") for i in ids}
    tree: Tree = {b"v1": {b"version": b"\x06", NS.encode(): {b"containers": containers}}}
    path = settings.root / METADATA_DIR / METADATA_FILE
    path.write_bytes(build(tree))
    return path


def _skipped_before_acting(result: ActionResult, accepted: list[int], note: str) -> None:
    assert result.outcome == Outcome.SKIPPED, result
    assert note in result.notes, result.notes
    assert accepted == []  # the shim was never dialled


def test_a_record_that_appeared_is_seen_through_the_api(
    settings: Settings, shim: tuple[Item, list[int]]
) -> None:
    item, accepted = shim
    with grpc_fake(Path(settings.address), {CONTAINERS_GET: _getter({ID})}):
        result = _apply(settings, item, NO_RECORD)
    _skipped_before_acting(result, accepted, "containerd has a record of it now")
    assert (_bundle(settings) / "config.json").exists()


@pytest.mark.parametrize(
    "handler",
    [sleeper(5), status(grpc.StatusCode.INTERNAL, "boom")],
    ids=["hangs", "internal"],
)
def test_an_api_that_does_not_answer_properly_leaves_it(
    settings: Settings, shim: tuple[Item, list[int]], handler: Handler
) -> None:
    item, accepted = shim
    _metadb(settings, [])  # never read instead of a containerd that accepts
    with grpc_fake(Path(settings.address), {CONTAINERS_GET: handler}):
        result = _apply(settings, item, NO_RECORD)
    _skipped_before_acting(result, accepted, "containerd's records cannot be re-read: left")


def test_a_record_in_metadb_while_containerd_is_stopped(
    settings: Settings, shim: tuple[Item, list[int]]
) -> None:
    item, accepted = shim
    _metadb(settings, ["other", ID])
    result = _apply(settings, item, NO_RECORD)
    _skipped_before_acting(result, accepted, "containerd has a record of it now")


@pytest.mark.parametrize("fault", ["missing", "locked"])
def test_unreadable_metadb_leaves_it(
    settings: Settings, shim: tuple[Item, list[int]], fault: str
) -> None:
    item, accepted = shim
    if fault == "missing":
        result = _apply(settings, item, NO_RECORD)
    else:
        fd = os.open(_metadb(settings, []), os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # as a running (or starting) containerd holds it
            start = time.monotonic()
            result = _apply(settings, item, NO_RECORD)
            assert time.monotonic() - start < SLACK  # a held lock is not waited for
        finally:
            os.close(fd)
    _skipped_before_acting(result, accepted, "containerd's records cannot be re-read: left")


def test_no_record_anywhere_lets_the_action_run(
    settings: Settings, shim: tuple[Item, list[int]]
) -> None:
    """The control: with the record provably absent (API NotFound; meta.db without it) the
    action goes on to the shim (which here is no shim: the action does not get far)."""
    item, accepted = shim
    with grpc_fake(Path(settings.address), {CONTAINERS_GET: _getter({"other"})}):
        via_api = _apply(settings, item, NO_RECORD)
    assert accepted, via_api
    accepted.clear()
    _bundle(settings).mkdir(exist_ok=True)  # the action may have got as far as deleting it
    _metadb(settings, ["other"])
    via_metadb = _apply(settings, item, NO_RECORD)
    assert accepted, via_metadb
    for result in (via_api, via_metadb):
        assert "containerd has a record of it now" not in result.notes
        assert "containerd's records cannot be re-read: left" not in result.notes


def test_the_recheck_runs_in_every_worker(settings: Settings) -> None:
    """Many items, one containerd: each re-check asks for its own id (threads share no
    answer)."""
    asked: list[str] = []
    lock = threading.Lock()

    def handler(raw: bytes, ctx: Any) -> bytes:
        request = containers_pb2.GetContainerRequest.FromString(raw)
        with lock:
            asked.append(request.id)
        reply = containers_pb2.GetContainerResponse(
            container=containers_pb2.Container(id=request.id)
        )
        return reply.SerializeToString()

    ids = [f"c{i}" for i in range(8)]
    planned = [Planned(Item(NS, i, "/unused", age_seconds=900.0), NO_RECORD) for i in ids]
    with grpc_fake(Path(settings.address), {CONTAINERS_GET: handler}):
        results = apply(settings, planned, dry_run=False)
    assert sorted(asked) == sorted(ids)
    for result in results:
        assert result is not None and result.outcome == Outcome.SKIPPED
        assert "containerd has a record of it now" in result.notes
