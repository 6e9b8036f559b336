"""`shimctl publish` (the publish-binary verb shims call) and `shimctl events`."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.protobuf import any_pb2

from shimctl.errors import ExitCode, InvalidArgument
from shimctl.ops import journal as events
from shimctl.reconcile.walk import namespaces
from shimctl.settings import Settings
from tests.support.helpers import Node, run_cli

TASK_EXIT = "containerd.events.TaskExit"


def any_bytes(type_url: str = TASK_EXIT, value: bytes = b"\x0a\x02c1") -> bytes:
    return any_pb2.Any(type_url=type_url, value=value).SerializeToString()


def publish(node: Node, data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """As a shim runs it: `<publish-binary> --address A publish --topic T --namespace NS`."""
    argv = [sys.executable, "-m", "shimctl", "--state", str(node.state)]
    argv += ["--address", node.address, "publish", *args]
    return subprocess.run(
        argv, input=data, env=node.env(), capture_output=True, timeout=30, check=False
    )


def settings(node: Node, **kw: object) -> Settings:
    return Settings(root=node.root, state=node.state, **kw)  # type: ignore[arg-type]


def test_publish_then_events(node: Node) -> None:
    proc = publish(node, any_bytes(), "--topic", "/tasks/exit", "--namespace", "default")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""  # a shim reads nothing back
    proc = publish(
        node, any_bytes("containerd.events.TaskOOM", b""), "--topic", "/tasks/oom",
        "--namespace", "k8s.io",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr

    journal = node.task_state / events.JOURNAL_NAME
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["namespace"], e["topic"], e["type_url"]) for e in lines] == [
        ("default", "/tasks/exit", TASK_EXIT),
        ("k8s.io", "/tasks/oom", "containerd.events.TaskOOM"),
    ]
    assert base64.b64decode(lines[0]["value"]) == b"\x0a\x02c1"
    assert lines[0]["time"].endswith("Z")

    text = run_cli(node, "events")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split() == ["TIME", "NAMESPACE", "TOPIC", "TYPE", "BYTES"]
    assert "/tasks/exit" in text.stdout and "/tasks/oom" in text.stdout

    doc = json.loads(run_cli(node, "-n", "k8s.io", "events", "--json").stdout)
    assert doc["command"] == "events"
    assert [e["topic"] for e in doc["result"]["events"]] == ["/tasks/oom"]
    doc = json.loads(run_cli(node, "events", "--topic", "/tasks/exit", "--json").stdout)
    assert [e["namespace"] for e in doc["result"]["events"]] == ["default"]
    # The journal is a hidden plain file: list/gc do not take it for a namespace.
    assert namespaces(settings(node)) == []


@pytest.mark.parametrize(
    ("data", "args", "message"),
    [
        (b"\xff\xff\xff", ["--topic", "/tasks/exit", "--namespace", "default"], "protobuf Any"),
        (b"", ["--topic", "/tasks/exit", "--namespace", "default"], "no type URL"),
        (any_bytes(), ["--topic", "tasks/exit", "--namespace", "default"], "invalid topic"),
        (any_bytes(), ["--topic", "/tasks/exit", "--namespace", "../x"], "namespace"),
    ],
)
def test_publish_refuses_bad_input(node: Node, data: bytes, args: list[str], message: str) -> None:
    proc = publish(node, data, *args)
    assert proc.returncode == InvalidArgument.exit_code
    assert message in proc.stderr.decode()
    assert not (node.task_state / events.JOURNAL_NAME).exists()


def test_publish_needs_topic_and_namespace(node: Node) -> None:
    assert (
        publish(node, any_bytes(), "--topic", "/tasks/exit").returncode == ExitCode.INVALID_ARGUMENT
    )


def test_events_empty_and_torn_lines(node: Node) -> None:
    proc = run_cli(node, "events")
    assert proc.returncode == 0 and proc.stdout.startswith("no events in ")
    node.task_state.mkdir(parents=True)
    good = events.publish(settings(node), topic="/a", namespace="default", data=any_bytes())
    with (node.task_state / events.JOURNAL_NAME).open("a") as f:
        f.write('{"time": "torn\n[1,2]\n')
    res = events.read(settings(node))
    assert res.events == [good] and res.skipped == 2
    proc = run_cli(node, "events")
    assert "2 line(s)" in proc.stderr and "/a" in proc.stdout


def test_concurrent_publishers_lose_nothing(node: Node) -> None:
    s = settings(node)

    def one(i: int) -> None:
        events.publish(s, topic=f"/t/{i}", namespace="default", data=any_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(64)))
    res = events.read(s)
    assert sorted(e.topic for e in res.events) == sorted(f"/t/{i}" for i in range(64))
    assert res.skipped == 0


def test_journal_rotates_past_its_cap(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "MAX_BYTES", 1000)
    s = settings(node)
    for i in range(40):
        events.publish(s, topic=f"/t/{i}", namespace="default", data=any_bytes())
    journal = node.task_state / events.JOURNAL_NAME
    rotated = journal.with_name(journal.name + ".1")
    assert journal.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    topics = [e.topic for e in events.read(s).events]
    # Oldest dropped, the rest in order, the newest last.
    assert topics == [f"/t/{i}" for i in range(40 - len(topics), 40)]
    assert sorted(os.listdir(node.task_state)) == [events.JOURNAL_NAME, rotated.name]
