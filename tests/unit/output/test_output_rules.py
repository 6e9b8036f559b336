"""Output rules: results on stdout, logs and progress on stderr only; a progress bar only when
stderr is a terminal; `--help` stays fast by not importing heavy modules."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
import time

import pytest

from shimctl.errors import ExitCode
from shimctl.models.progress import counted
from shimctl.output import console, progress
from tests.support.helpers import Node


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_and_for_many_items() -> None:
    tty = FakeTTY()
    with progress.ProgressBar(tty) as bar:
        bar("inspect", 0, progress.PROGRESS_MIN_ITEMS - 1)
        assert tty.getvalue() == ""  # a few items: no bar
        for i in range(progress.PROGRESS_MIN_ITEMS + 1):
            bar("inspect", i, progress.PROGRESS_MIN_ITEMS)
    assert "inspecting shims" in tty.getvalue()

    pipe = io.StringIO()
    with progress.ProgressBar(pipe) as bar:
        for i in range(20):
            bar("apply", i, 20)
    assert pipe.getvalue() == ""

    quiet = FakeTTY()
    with progress.ProgressBar(quiet, enabled=False) as bar:
        bar("apply", 1, 20)
    assert quiet.getvalue() == ""


def test_counted_reports_every_item() -> None:
    seen: list[tuple[str, int, int]] = []

    def double(x: int) -> int:
        return x * 2

    fn = counted(double, "apply", 3, lambda *a: seen.append(a))
    assert [fn(i) for i in range(3)] == [0, 2, 4]
    assert seen == [("apply", 0, 3), ("apply", 1, 3), ("apply", 2, 3), ("apply", 3, 3)]
    same = counted(len, "x", 1, None)
    assert same is len


def test_gc_progress_goes_to_a_terminal_stderr_never_stdout(node: Node) -> None:
    for i in range(12):
        (node.task_state / "default" / f"e{i}").mkdir(parents=True)
    gc = ["-n", "default", "gc", "--min-age", "0", "--dry-run", "--json"]
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shimctl", *node.cli_args(), *gc],
            env={k: v for k, v in node.env().items() if k != "NO_COLOR"} | {"TERM": "xterm"},
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(slave)
    err = b""
    deadline = time.monotonic() + 5
    os.set_blocking(master, False)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 65536)
        except BlockingIOError:
            break
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    assert proc.returncode == 0
    doc = json.loads(out)  # stdout is exactly one JSON document
    assert doc["result"]["counts"] == {"empty": 12}
    assert b"inspecting shims" in err


def test_plain_output_without_a_terminal(node: Node) -> None:
    for i in range(12):
        (node.task_state / "default" / f"e{i}").mkdir(parents=True)
    env = {k: v for k, v in node.env().items() if k != "NO_COLOR"}
    proc = subprocess.run(
        [sys.executable, "-m", "shimctl", *node.cli_args(), "-n", "default", "list"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0
    assert b"\x1b" not in proc.stdout and proc.stderr == b""
    assert proc.stdout.splitlines()[0].split()[:3] == [b"NAMESPACE", b"ID", b"KIND"]


def test_a_reader_that_goes_away_ends_the_run_quietly(node: Node) -> None:
    """`shimctl list | head`: the pipe closes before shimctl writes; no error message, no
    traceback, the status a shell shows for a tool killed by SIGPIPE."""
    for i in range(3):
        (node.task_state / "default" / f"e{i}").mkdir(parents=True)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "shimctl", *node.cli_args(), "-n", "default", "list"],
            env=node.env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            check=False,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == ExitCode.BROKEN_PIPE, proc.stderr
    assert proc.stderr == b""


def test_exit_status_and_output_survive_the_fast_exit(node: Node) -> None:
    """The program ends without interpreter teardown (cli.entry); its output and exit status
    are exactly what main() produced."""
    proc = subprocess.run(
        [sys.executable, "-m", "shimctl", *node.cli_args(), "delete", "nosuch", "--json"],
        env=node.env(),
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == ExitCode.NOT_FOUND
    assert json.loads(proc.stdout)["error"]["kind"] == "not-found"
    assert proc.stderr.startswith(b"shimctl: error: ")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["gc", "--help"]])
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from shimctl.cli.app import main\n"
        "try:\n"
        f"    main({argv!r}, prog_name='shimctl')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = {'rich', 'psutil', 'pydantic', 'google', 'shimctl.ops.start',\n"
        "         'shimctl.ops.delete'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert proc.stdout.splitlines()[-1] == "[]"


def test_doctor_checklist_on_a_colour_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from shimctl.models.info import Check, DoctorReport

    monkeypatch.delenv("NO_COLOR", raising=False)
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    rep = DoctorReport(
        [
            Check("privileges", "ok", "running as root"),
            Check("runtime io.containerd.runc.v2", "fail", "not installed \x1b[2J", "install it"),
        ]
    )
    console.Console(json_output=False).doctor(rep)
    text = out.getvalue()
    assert "\x1b[2J" not in text and "\\x1b[2J" in text  # shim/dir text cannot drive it
    lines = [line for line in text.splitlines() if line.strip()]
    assert "[FAIL]" in lines[1] and lines[2].strip() == "fix: install it"
    assert lines[-1] == "doctor: 2 checks, 1 failed, 0 warnings"
