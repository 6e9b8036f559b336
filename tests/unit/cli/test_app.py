"""The root group and run_main, in process: option parsing, the one exit status, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from shimctl.cli.app import main, run_main
from shimctl.cli.context import CliContext
from shimctl.errors import ExitCode
from tests.support.helpers import Node


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SHIMCTL_ROOT", "SHIMCTL_STATE", "SHIMCTL_NAMESPACE", "SHIMCTL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHIMCTL_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("NO_COLOR", "1")


def _parsed(args: list[str]) -> CliContext:
    """The CliContext the group's options and callbacks leave, as a command would get it."""
    seen: list[CliContext] = []

    @click.command("probe")
    @click.pass_obj
    def probe(obj: CliContext) -> ExitCode:
        seen.append(obj)
        return ExitCode.OK

    main.add_command(probe)
    try:
        assert main.main(args=[*args, "probe"], standalone_mode=False) is ExitCode.OK
    finally:
        main.commands.pop("probe")
    return seen[0]


def test_global_options_land_in_the_typed_context(clean_env: None) -> None:
    dirs = ["--root", "/r", "--state", "/s", "-n", "ns1", "--address", "/a.sock", "--debug"]
    more = ["--ttrpc-address", "/t.sock", "--publish-binary", "/bin/pub", "--timeout", "2.5"]
    cli = _parsed([*dirs, *more, "--json"])
    assert cli == CliContext(
        root="/r",
        state="/s",
        namespace="ns1",
        address="/a.sock",
        ttrpc_address="/t.sock",
        publish_binary="/bin/pub",
        debug=True,
        timeout=2.5,
        json_output=True,
        config=cli.config,
    )


def test_environment_fills_what_flags_do_not(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIMCTL_ROOT", "/env-root")
    monkeypatch.setenv("SHIMCTL_TIMEOUT", "7")
    cli = _parsed(["--state", "/flag-state"])
    assert (cli.root, cli.state, cli.timeout, cli.namespace) == (
        "/env-root",
        "/flag-state",
        7,
        None,
    )
    assert _parsed(["--root", "/flag-root"]).root == "/flag-root"


def test_settings_are_built_from_the_context(clean_env: None) -> None:
    cli = CliContext(root="/r", state="/s", namespace="ns1", timeout=2.0)
    settings = cli.settings(existing_dirs=False)
    assert (settings.root, settings.state) == (Path("/r"), Path("/s"))
    assert (settings.namespace, settings.namespace_given) == ("ns1", True)
    assert settings.timeouts.load == 2.0


def test_a_command_s_exit_code_is_the_status(
    clean_env: None, node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_main([*node.cli_args(), "delete", "nope"])
    assert code == ExitCode.NOT_FOUND
    assert capsys.readouterr().err.startswith("shimctl: error: no bundle for task 'nope'")


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_before_or_after_the_command(
    clean_env: None, node: Node, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    args = ["--json", "list"] if where == "before" else ["list", "--json"]
    assert run_main([*node.cli_args(), "-n", "default", *args]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["command"] == "list"


def test_usage_errors_are_invalid_argument(
    clean_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(["delete"]) == ExitCode.INVALID_ARGUMENT
    assert "Missing argument 'ID'" in capsys.readouterr().err
    assert run_main(["nosuch"]) == ExitCode.INVALID_ARGUMENT
    assert run_main(["lsit"]) == ExitCode.INVALID_ARGUMENT
    err = capsys.readouterr().err
    assert "No such command 'lsit'." in err
    if hasattr(click.exceptions, "NoSuchCommand"):  # click 8.2+ suggests a near name
        assert "Did you mean 'list'?" in err
    assert run_main(["--timeout", "soon", "list"]) == ExitCode.INVALID_ARGUMENT


def test_help_and_version_succeed(clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--help"]) == ExitCode.OK
    assert "Commands:" in capsys.readouterr().out
    assert run_main(["--version"]) == ExitCode.OK
    assert capsys.readouterr().out.startswith("shimctl, version ")


def test_every_command_is_registered() -> None:
    ctx = click.Context(main)
    assert isinstance(main, click.Group)
    assert main.list_commands(ctx) == sorted(
        ["start", "delete", "list", "load", "gc", "logs", "publish", "events", "version", "doctor"]
    )
