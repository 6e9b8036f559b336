"""Output: plain/rich text, --json documents, errors and exit codes (output.console, CLI)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from shimctl.errors import (
    AlreadyExists,
    DeadlineExceeded,
    ExitCode,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotImplementedByShim,
    ProtocolError,
    ShimClosed,
    Unavailable,
    Unknown,
    Unsafe,
    from_grpc_code,
)
from shimctl.models.findings import Finding, Mode, Owner, ReconcileReport
from shimctl.models.results import DeleteResult
from shimctl.output import console
from shimctl.output.console import Console
from shimctl.output.text import age
from tests.support.helpers import Node, run_cli


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_color_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


# -- unit: Console ------------------------------------------------------------------------------


def test_use_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert console.use_color(FakeTTY()) is True
    assert console.use_color(io.StringIO()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert console.use_color(FakeTTY()) is False
    # no-color.org: an empty NO_COLOR does not count.
    monkeypatch.setenv("NO_COLOR", "")
    assert console.use_color(FakeTTY()) is True


def test_result_text_is_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=False).result(
        "start",
        None,
        text=[("id", "c1"), ("shim pid", 42), ("sandbox", None), ("notes", []), ("x", ["a", 2])],
    )
    out, err = capsys.readouterr()
    assert out == "id:       c1\nshim pid: 42\nx:        a; 2\n"
    assert err == ""


def test_result_text_escapes_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=False).result("x", None, text=[("notes", ["shim said \x1b[2J\nbye"])])
    assert capsys.readouterr().out == "notes: shim said \\x1b[2J\\nbye\n"


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=False, quiet=True).result("gc", None, text=[("a", "b")])
    assert capsys.readouterr() == ("", "")


def test_result_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    res = DeleteResult(
        id="c1",
        namespace="default",
        pid=7,
        exit_status=137,
        exited_at=None,
        method="shim-binary",
        shim_stopped=True,
        notes=["n"],
    )
    Console(json_output=True).result("delete", res, text=[("ignored", "x")])
    out, err = capsys.readouterr()
    assert err == ""
    assert json.loads(out) == {
        "schema_version": 2,
        "command": "delete",
        "result": {
            "id": "c1",
            "namespace": "default",
            "pid": 7,
            "exit_status": 137,
            "exited_at": None,
            "method": "shim-binary",
            "shim_stopped": True,
            "notes": ["n"],
        },
    }


def test_json_result_is_printed_even_when_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=True, quiet=True).result("gc", {"a": (1, 2)}, text=[])
    assert json.loads(capsys.readouterr().out)["result"] == {"a": [1, 2]}


def test_error_text(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=False).error(NotFound("no such thing", hint="look elsewhere"))
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "shimctl: error: no such thing\nshimctl: hint: look elsewhere\n"


def test_error_without_hint_and_with_control_chars(capsys: pytest.CaptureFixture[str]) -> None:
    # Multi-line shim output survives; escape sequences do not reach the terminal.
    Console(json_output=False).error(Unknown("start failed: line1\n\tline2\x1b]0;pwn\x07"))
    out, err = capsys.readouterr()
    assert err == "shimctl: error: start failed: line1\n\tline2\\x1b]0;pwn\\x07\n"
    assert out == ""


def test_error_json(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=True).error(AlreadyExists("taken", hint="pick another"))
    out, err = capsys.readouterr()
    assert err == "shimctl: error: taken\nshimctl: hint: pick another\n"
    assert json.loads(out) == {
        "schema_version": 2,
        "error": {
            "kind": "already-exists",
            "message": "taken",
            "exit_code": ExitCode.ALREADY_EXISTS,
        },
    }


def test_warn(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=True).warn("careful")
    assert capsys.readouterr() == ("", "shimctl: warning: careful\n")


@pytest.mark.parametrize(
    ("cls", "code", "kind"),
    [
        (Unknown, ExitCode.UNKNOWN, "unknown"),
        (InvalidArgument, ExitCode.INVALID_ARGUMENT, "invalid-argument"),
        (NotFound, ExitCode.NOT_FOUND, "not-found"),
        (AlreadyExists, ExitCode.ALREADY_EXISTS, "already-exists"),
        (FailedPrecondition, ExitCode.FAILED_PRECONDITION, "failed-precondition"),
        (Unavailable, ExitCode.UNAVAILABLE, "unavailable"),
        (ShimClosed, ExitCode.UNAVAILABLE, "closed"),
        (DeadlineExceeded, ExitCode.DEADLINE_EXCEEDED, "deadline-exceeded"),
        (NotImplementedByShim, ExitCode.NOT_IMPLEMENTED, "not-implemented"),
        (ProtocolError, ExitCode.PROTOCOL, "protocol"),
        (Unsafe, ExitCode.UNSAFE, "unsafe"),
    ],
)
def test_exit_codes_match_the_readme(cls: type[Unknown], code: ExitCode, kind: str) -> None:
    err = cls("m")
    assert (err.exit_code, err.kind, str(err)) == (code, kind, "m")
    assert int(ExitCode.ACTIONS_FAILED) == 11


@pytest.mark.parametrize(
    ("code", "message", "cls", "text"),
    [
        (5, "container not created", NotFound, "container not created: not found"),
        (5, "container x: not found", NotFound, "container x: not found"),
        (9, "", FailedPrecondition, "failed precondition"),
        (4, "context deadline exceeded", DeadlineExceeded, "context deadline exceeded"),
        (12, "nope", NotImplementedByShim, "nope: not implemented"),
        (13, "internal", Unknown, "internal"),
    ],
)
def test_from_grpc_code(code: int, message: str, cls: type[Unknown], text: str) -> None:
    err = from_grpc_code(code, message)
    assert type(err) is cls
    assert str(err) == text


def test_table_plain_is_aligned(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    Console().table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert capsys.readouterr().out == "A    LONGER\nxyz  1\n     22\n"


def test_table_without_rows(capsys: pytest.CaptureFixture[str]) -> None:
    Console().table(["ID", "KIND"], [])
    assert capsys.readouterr().out == "ID  KIND\n"


def test_table_no_color_on_a_tty_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = FakeTTY()
    monkeypatch.setattr("sys.stdout", tty)
    monkeypatch.setenv("NO_COLOR", "1")
    Console().table(["ID"], [["a\x1bb"]])
    assert tty.getvalue() == "ID\na\\x1bb\n"


def test_table_rich_on_a_tty_takes_cells_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = FakeTTY()
    monkeypatch.setattr("sys.stdout", tty)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    # A directory name is not rich markup: no crash, no style, printed as is.
    Console().table(["ID", "KIND"], [["[/bad]", "[bold]x\x1b[0m"]])
    out = tty.getvalue()
    assert "[/bad]" in out
    assert "[bold]x\\x1b[0m" in out
    assert "\x1b[1m" in out  # the header is bold: this was the rich path


def _finding(**kw: object) -> Finding:
    base: dict[str, object] = {
        "kind": "dead",
        "namespace": "default",
        "id": "c1",
        "path": "/s/c1",
        "reason": "socket refuses",
    }
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]


def _report(command: Mode, findings: list[Finding], **kw: object) -> ReconcileReport:
    return ReconcileReport(
        command=command,
        dry_run=bool(kw.get("dry_run", False)),
        findings=findings,
        duration_seconds=0.5,
        counts={f.kind: 1 for f in findings},
        errors=int(kw.get("errors", 0)),  # type: ignore[call-overload]
    )


def test_report_list_empty(capsys: pytest.CaptureFixture[str], no_color_env: None) -> None:
    Console(json_output=False).report(_report(Mode.LIST, []))
    assert capsys.readouterr().out == "no shims, bundles or leftovers found\n"


def test_report_list_table(capsys: pytest.CaptureFixture[str], no_color_env: None) -> None:
    f = _finding(
        kind="running",
        shim_pid=10,
        task_pids=[11, 12],
        runtime="/usr/bin/containerd-shim-runc-v2",
        api_version=2,
        protocol="ttrpc",
        age_seconds=3700,
        task_status="paused",
        owner=Owner.TRACKED,
    )
    Console(json_output=False).report(_report(Mode.LIST, [f]))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "ID",
        "KIND",
        "STATUS",
        "OWNER",
        "SHIM",
        "PID",
        "TASK",
        "PIDS",
        "RUNTIME",
        "API",
        "AGE",
    ]
    assert lines[1].split() == [
        "default",
        "c1",
        "running",
        "paused",
        "tracked",
        "10",
        "11,12",
        "containerd-shim-runc-v2",
        "v2/ttrpc",
        "1h",
    ]
    assert lines[0].index("KIND") == lines[1].index("running")


def test_report_gc_summary_and_failures(
    capsys: pytest.CaptureFixture[str], no_color_env: None
) -> None:
    done = _finding(action="delete-dead", outcome="done")
    failed = _finding(id="c2", action="delete-dead", outcome="failed", error="boom")
    Console(json_output=False).report(_report(Mode.GC, [done, failed], errors=1))
    out, err = capsys.readouterr()
    assert "gc: found 1 dead; acted on 1, failed 1 (0.50s)\n" in out
    assert "c2" in out and "boom" in out
    assert err == "shimctl: error: dead default/c2: boom\n"


def test_report_json(capsys: pytest.CaptureFixture[str]) -> None:
    Console(json_output=True).report(_report(Mode.GC, [_finding()], dry_run=True))
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 2
    assert doc["command"] == "gc"
    assert doc["result"]["dry_run"] is True
    assert doc["result"]["findings"][0]["kind"] == "dead"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0, "0s"), (59.9, "59s"), (60, "1m"), (7200, "2h"), (200000, "2d")],
)
def test_age(seconds: float | None, text: str) -> None:
    assert age(seconds) == text


# -- through the CLI ----------------------------------------------------------------------------


def test_cli_not_found_exit_3(node: Node) -> None:
    res = run_cli(node, "delete", "nope")
    assert res.returncode == ExitCode.NOT_FOUND
    assert res.stdout == ""
    bundle = node.bundle("nope")
    assert res.stderr == (
        f"shimctl: error: no bundle for task 'nope' in namespace 'default' (looked in {bundle})\n"
        "shimctl: hint: check the id, --namespace and --state\n"
    )


@pytest.mark.parametrize("where", ["global", "command"])
def test_cli_json_error_document(node: Node, where: str) -> None:
    args = ["--json", "delete", "nope"] if where == "global" else ["delete", "--json", "nope"]
    res = run_cli(node, *args)
    assert res.returncode == ExitCode.NOT_FOUND
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 2
    assert doc["error"]["kind"] == "not-found"
    assert doc["error"]["exit_code"] == ExitCode.NOT_FOUND
    assert doc["error"]["message"].startswith("no bundle for task 'nope'")
    assert res.stderr.startswith("shimctl: error: no bundle for task 'nope'")


def test_cli_invalid_id_exit_2(node: Node) -> None:
    res = run_cli(node, "delete", "a..b")
    assert res.returncode == ExitCode.INVALID_ARGUMENT
    assert res.stderr.startswith('shimctl: error: invalid task id "a..b": identifier "a..b"')
    assert "shimctl: hint: " in res.stderr


def test_cli_usage_error_exit_2(node: Node) -> None:
    res = run_cli(node, "delete")
    assert res.returncode == ExitCode.INVALID_ARGUMENT
    assert "Missing argument" in res.stderr


def _bundle_dir(node: Node, task_id: str) -> Path:
    bundle = node.bundle(task_id)
    (bundle / "rootfs").mkdir(parents=True)
    return bundle


def test_cli_already_exists_exit_4(node: Node) -> None:
    bundle = _bundle_dir(node, "c1")
    (bundle / "config.json").write_text("{}")
    res = run_cli(node, "--json", "start", "c1", "--runtime", "/bin/true")
    assert res.returncode == ExitCode.ALREADY_EXISTS, res.stderr
    assert json.loads(res.stdout)["error"]["kind"] == "already-exists"
    assert (bundle / "config.json").read_text() == "{}"


def test_cli_failed_precondition_exit_5(node: Node) -> None:
    bundle = _bundle_dir(node, "c1")
    (bundle / "rootfs" / "left").write_text("x")
    res = run_cli(node, "delete", "c1")
    assert res.returncode == ExitCode.FAILED_PRECONDITION, res.stderr
    assert f"shimctl: error: bundle rootfs {bundle / 'rootfs'} is not empty" in res.stderr
    assert (bundle / "rootfs" / "left").exists()


def test_cli_not_implemented_exit_8(node: Node) -> None:
    bundle = _bundle_dir(node, "c1")
    (bundle / "bootstrap.json").write_text('{"version":4,"address":"unix:///x"}')
    res = run_cli(node, "delete", "c1")
    assert res.returncode == ExitCode.NOT_IMPLEMENTED, res.stderr
    assert "unsupported shim bootstrap version 4" in res.stderr
    assert bundle.exists()


def test_cli_unsafe_exit_10(node: Node, tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("x")
    bundle = _bundle_dir(node, "c1")
    os.symlink(precious, bundle / "work")
    res = run_cli(node, "--json", "delete", "c1")
    assert res.returncode == ExitCode.UNSAFE, res.stderr
    assert json.loads(res.stdout)["error"]["kind"] == "unsafe"
    assert (precious / "keep").read_text() == "x"
    assert (bundle / "rootfs").is_dir()


def test_cli_list_json_and_plain(node: Node) -> None:
    res = run_cli(node, "-n", "default", "list", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["schema_version"], doc["command"]) == (2, "list")
    assert doc["result"]["command"] == "list"
    res = run_cli(node, "-n", "default", "list")
    assert res.returncode == 0, res.stderr
    assert "\x1b" not in res.stdout
