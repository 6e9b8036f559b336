"""Global options are accepted after the command name too (`shimctl list --root DIR`), with
the same precedence: a flag beats the environment, which beats the config file; given twice,
the later one counts."""

from __future__ import annotations

import json

import pytest

from shimctl.errors import ExitCode
from tests.support.helpers import Node

from .runner import shimctl


def _dirs(node: Node) -> list[str]:
    return ["--root", str(node.root), "--state", str(node.state), "--address", node.address]


def test_list_after_the_command(node: Node) -> None:
    (node.task_state / "ns1" / "e1").mkdir(parents=True)
    (node.task_state / "ns2" / "e2").mkdir(parents=True)
    proc = shimctl(node, "list", *_dirs(node), "-n", "ns1", "--json")
    assert proc.returncode == ExitCode.OK, proc.stderr
    found = json.loads(proc.stdout)["result"]["findings"]
    assert [(f["namespace"], f["id"], f["kind"]) for f in found] == [("ns1", "e1", "empty")]


def test_gc_after_the_command(node: Node) -> None:
    empty = node.task_state / "default" / "e1"
    empty.mkdir(parents=True)
    proc = shimctl(node, "gc", "--min-age", "0", *_dirs(node), "-n", "default")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert not empty.exists()


def test_start_after_the_command(node: Node) -> None:
    # A bundle that exists already: start refuses it, which proves it looked in this state dir.
    bundle = node.bundle("c1")
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text("{}")
    proc = shimctl(node, "start", "c1", "--runtime", "/bin/true", *_dirs(node), "--json")
    assert proc.returncode == ExitCode.ALREADY_EXISTS, proc.stderr
    assert json.loads(proc.stdout)["error"]["kind"] == "already-exists"
    assert (bundle / "config.json").read_text() == "{}"


@pytest.mark.parametrize("where", ["env", "before"])
def test_after_the_command_beats_env_and_before(node: Node, where: str) -> None:
    (node.task_state / "default" / "e1").mkdir(parents=True)
    wrong = str(node.base / "wrong")
    env = {"SHIMCTL_STATE": wrong} if where == "env" else {}
    before = ["--state", wrong] if where == "before" else []
    proc = shimctl(
        node,
        *before,
        "list",
        "--root",
        str(node.root),
        "--state",
        str(node.state),
        "-n",
        "default",
        "--json",
        env=env,
    )
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert json.loads(proc.stdout)["result"]["counts"] == {"empty": 1}


def test_a_flag_before_the_command_beats_the_environment(node: Node) -> None:
    wrong = str(node.base / "wrong")
    dirs = ["--state", str(node.state), "--root", str(node.root)]
    proc = shimctl(node, *dirs, "-n", "default", "list", env={"SHIMCTL_STATE": wrong})
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert proc.stdout == "no shims, bundles or leftovers found\n"


def test_publish_keeps_its_own_namespace_option(node: Node) -> None:
    proc = shimctl(
        node, "publish", "--topic", "/t", "--namespace", "ns1", "--state", str(node.state)
    )
    # stdin is empty: not an event, but --namespace was taken as the event's namespace.
    assert proc.returncode == ExitCode.INVALID_ARGUMENT
    assert "No such option" not in proc.stderr and "Missing option" not in proc.stderr


def test_the_options_stay_out_of_each_command_s_help(node: Node) -> None:
    proc = shimctl(node, "list", "--help")
    assert proc.returncode == ExitCode.OK
    assert "--root" not in proc.stdout and "--json" in proc.stdout
