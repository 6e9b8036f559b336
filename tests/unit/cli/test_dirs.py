"""A --root/--state that is relative, missing or not a directory is an error naming the path
and the fix, never a run that finds nothing and exits 0 (a typo in a cron line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shimctl import settings as settings_mod
from shimctl.errors import ExitCode, InvalidArgument, NotFound
from shimctl.settings import build_settings
from tests.support.helpers import Node

from .runner import shimctl

READERS = [
    ["list"],
    ["load"],
    ["gc"],
    ["delete", "c1"],
    ["logs", "c1"],
    ["events"],
    ["start", "c1"],
]


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
@pytest.mark.parametrize("which", ["--root", "--state"])
def test_a_missing_dir_is_not_found(node: Node, command: list[str], which: str) -> None:
    missing = node.base / "typo"
    args = {"--root": str(node.root), "--state": str(node.state), which: str(missing)}
    proc = shimctl(node, "--root", args["--root"], "--state", args["--state"], *command)
    assert proc.returncode == ExitCode.NOT_FOUND, proc.stderr
    assert proc.stderr.startswith(f"shimctl: error: {which[2:]} dir {missing} (from {which}")
    assert f"shimctl: hint: pass {which}" in proc.stderr
    assert proc.stdout == ""
    assert not missing.exists()  # start created nothing either


@pytest.mark.parametrize("command", [["list"], ["gc"], ["delete", "c1"]], ids=lambda c: c[0])
def test_a_relative_dir_is_invalid(node: Node, command: list[str]) -> None:
    proc = shimctl(node, "--root", "root", "--state", str(node.state), *command, cwd=node.base)
    assert proc.returncode == ExitCode.INVALID_ARGUMENT, proc.stderr
    assert "root dir 'root' (from --root or SHIMCTL_ROOT) is not an absolute path" in proc.stderr


def test_a_file_is_not_a_dir(node: Node) -> None:
    afile = node.base / "afile"
    afile.write_text("")
    proc = shimctl(node, "--root", str(node.root), "--state", str(afile), "list", "--json")
    assert proc.returncode == ExitCode.INVALID_ARGUMENT
    doc = json.loads(proc.stdout)
    assert (
        doc["error"]["message"]
        == f"state dir {afile} (from --state or SHIMCTL_STATE) is not a directory"
    )


def test_the_environment_and_the_config_are_named(node: Node) -> None:
    missing = str(node.base / "nope")
    proc = shimctl(node, "--root", str(node.root), "list", env={"SHIMCTL_STATE": missing})
    assert proc.returncode == ExitCode.NOT_FOUND
    assert f"state dir {missing} (from --state or SHIMCTL_STATE)" in proc.stderr
    config = node.base / "config.toml"
    config.write_text(f'root = "{missing}"\nstate = "{node.state}"\n')
    proc = shimctl(node, "--config", str(config), "list")
    assert proc.returncode == ExitCode.NOT_FOUND
    assert f"root dir {missing} (from root in {config}) does not exist" in proc.stderr


def test_the_default_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_mod, "DEFAULT_ROOT", str(tmp_path / "var-lib-containerd"))
    with pytest.raises(NotFound, match="containerd's default") as info:
        build_settings(config=tmp_path / "none", state=str(tmp_path), existing_dirs=True)
    assert "install and start it first" in (info.value.hint or "")
    with pytest.raises(InvalidArgument, match="not an absolute path"):
        build_settings(config=tmp_path / "none", root="rel", existing_dirs=True)


def test_without_the_check_dirs_are_not_looked_at(tmp_path: Path) -> None:
    s = build_settings(config=tmp_path / "none", root="/nonexistent/r", publish_binary="/x")
    assert s.root == Path("/nonexistent/r")


def test_existing_dirs_pass(node: Node) -> None:
    proc = shimctl(node, *node.cli_args(), "-n", "default", "list")
    assert proc.returncode == ExitCode.OK, proc.stderr
    assert proc.stdout == "no shims, bundles or leftovers found\n"


def test_doctor_reports_a_missing_dir_as_a_failed_check(node: Node) -> None:
    missing = node.base / "nope"
    proc = shimctl(node, "--root", str(node.root), "--state", str(missing), "doctor", "--json")
    assert proc.returncode == ExitCode.FAILED_PRECONDITION, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["result"]["checks"]}
    assert checks["state dir"]["status"] == "fail"
    assert str(missing) in checks["state dir"]["detail"]


def test_version_needs_no_dirs(node: Node) -> None:
    missing = str(node.base / "nope")
    proc = shimctl(node, "--root", missing, "--state", missing, "version", "--json")
    assert proc.returncode == ExitCode.OK, proc.stderr
