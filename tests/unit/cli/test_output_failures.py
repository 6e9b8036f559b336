"""Output that cannot be written ends the run non-zero, buffered or not: a reader that went
away is a quiet BROKEN_PIPE; a full disk or an I/O error is an error on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from shimctl.errors import ExitCode
from tests.support.helpers import Node

from .runner import REPO


def _run(
    node: Node, args: list[str], stdout: int, *, buffered: bool
) -> subprocess.CompletedProcess[bytes]:
    env = node.env() | {"PYTHONPATH": str(REPO)}
    if buffered:  # what a user's shell gives: block-buffered stdout into a file or pipe
        env.pop("PYTHONUNBUFFERED", None)
    else:
        env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "shimctl", *args],
        env=env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def _some_findings(node: Node) -> None:
    for i in range(3):
        (node.task_state / "default" / f"e{i}").mkdir(parents=True)


COMMANDS = [["-n", "default", "list"], ["-n", "default", "list", "--json"], ["--help"]]


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", COMMANDS, ids=["list", "list-json", "help"])
def test_a_full_disk_fails_the_run(node: Node, args: list[str], buffered: bool) -> None:
    _some_findings(node)
    with open("/dev/full", "wb") as full:
        proc = _run(node, [*node.cli_args(), *args], full.fileno(), buffered=buffered)
    assert proc.returncode == ExitCode.UNKNOWN, proc.stderr
    lines = proc.stderr.decode().splitlines()
    assert lines[0].startswith("shimctl: error: ") and "No space left on device" in lines[0]
    assert len(lines) == 1 and b"Traceback" not in proc.stderr


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("args", COMMANDS, ids=["list", "list-json", "help"])
def test_a_closed_pipe_is_a_quiet_broken_pipe(node: Node, args: list[str], buffered: bool) -> None:
    _some_findings(node)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        proc = _run(node, [*node.cli_args(), *args], write_end, buffered=buffered)
    finally:
        os.close(write_end)
    assert proc.returncode == ExitCode.BROKEN_PIPE, proc.stderr
    assert proc.stderr == b""


def test_output_that_fits_is_unchanged_when_buffered(node: Node) -> None:
    _some_findings(node)
    proc = _run(
        node, [*node.cli_args(), "-n", "default", "list", "--json"], subprocess.PIPE, buffered=True
    )
    assert proc.returncode == ExitCode.OK and proc.stderr == b""
    assert json.loads(proc.stdout)["result"]["counts"] == {"empty": 3}


def test_a_failing_command_keeps_its_status_when_output_fails(node: Node) -> None:
    with open("/dev/full", "wb") as full:
        proc = _run(
            node, [*node.cli_args(), "delete", "nosuch", "--json"], full.fileno(), buffered=True
        )
    assert proc.returncode == ExitCode.NOT_FOUND
    assert proc.stderr.decode().startswith("shimctl: error: no bundle for task 'nosuch'")
