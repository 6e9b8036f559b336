"""cli.exits.run: how each way a command can end becomes an exit code and a line on stderr."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from shimctl.cli.context import CliContext
from shimctl.cli.exits import report_exit, run
from shimctl.errors import ExitCode, NotFound, Unsafe
from shimctl.models.findings import Finding, Kind, Mode, ReconcileReport
from shimctl.output.console import Console


def _raising(exc: BaseException) -> Callable[[Console], ExitCode]:
    def action(_console: Console) -> ExitCode:
        raise exc

    return action


def test_the_action_s_code_is_returned(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(CliContext(), lambda _console: ExitCode.ACTIONS_FAILED) is ExitCode.ACTIONS_FAILED
    assert capsys.readouterr() == ("", "")


def test_a_shimctl_error_gives_its_code_and_message(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(CliContext(), _raising(Unsafe("not the shim", hint="look")))
    assert code is ExitCode.UNSAFE
    assert capsys.readouterr() == ("", "shimctl: error: not the shim\nshimctl: hint: look\n")


def test_with_json_the_error_is_also_a_document(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(CliContext(json_output=True), _raising(NotFound("gone")))
    assert code is ExitCode.NOT_FOUND
    out, err = capsys.readouterr()
    assert json.loads(out)["error"] == {"kind": "not-found", "message": "gone", "exit_code": 3}
    assert err == "shimctl: error: gone\n"


def test_a_broken_pipe_is_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(CliContext(), _raising(BrokenPipeError())) is ExitCode.BROKEN_PIPE
    assert capsys.readouterr() == ("", "")


def test_an_os_error_names_its_path(capsys: pytest.CaptureFixture[str]) -> None:
    err = OSError(30, "Read-only file system", "/run/x")
    assert run(CliContext(), _raising(err)) is ExitCode.UNKNOWN
    assert capsys.readouterr().err == "shimctl: error: Read-only file system: /run/x\n"


def test_an_interrupt_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(CliContext(), _raising(KeyboardInterrupt())) is ExitCode.INTERRUPTED
    assert capsys.readouterr() == ("", "shimctl: interrupted\n")


def test_quiet_reaches_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    def action(console: Console) -> ExitCode:
        console.result("gc", None, text=[("a", "b")])
        return ExitCode.OK

    assert run(CliContext(), action, quiet=True) is ExitCode.OK
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(("errors", "code"), [(0, ExitCode.OK), (2, ExitCode.ACTIONS_FAILED)])
def test_report_exit(errors: int, code: ExitCode) -> None:
    rep = ReconcileReport(
        command=Mode.GC, dry_run=False, findings=[], duration_seconds=0.0, errors=errors
    )
    assert report_exit(rep) is code


def _report_of(*kinds: Kind, errors: int = 0) -> ReconcileReport:
    findings = [
        Finding(kind=k, namespace="default", id=f"x{i}", path="/p", reason="r")
        for i, k in enumerate(kinds)
    ]
    return ReconcileReport(Mode.GC, False, findings, 0.0, errors=errors)


@pytest.mark.parametrize(
    ("kinds", "errors", "plain", "with_flag"),
    [
        ((), 0, ExitCode.OK, ExitCode.OK),
        ((Kind.RUNNING, Kind.STOPPED, Kind.SANDBOX, Kind.UNSAFE), 0, ExitCode.OK, ExitCode.OK),
        ((Kind.RUNNING, Kind.LEAKED), 0, ExitCode.OK, ExitCode.GARBAGE_FOUND),
        ((Kind.ORPHANED,), 0, ExitCode.OK, ExitCode.GARBAGE_FOUND),
        ((Kind.STALE_SOCKET,), 0, ExitCode.OK, ExitCode.GARBAGE_FOUND),
        ((Kind.DEAD,), 1, ExitCode.ACTIONS_FAILED, ExitCode.ACTIONS_FAILED),
    ],
)
def test_exit_code_flag_tells_garbage_found(
    kinds: tuple[Kind, ...], errors: int, plain: ExitCode, with_flag: ExitCode
) -> None:
    rep = _report_of(*kinds, errors=errors)
    assert report_exit(rep) is plain
    assert report_exit(rep, garbage_code=True) is with_flag
