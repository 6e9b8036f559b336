"""`shimctl --help` shows the effective built-in defaults of --root, --state and --address
(without reading any config file), and what -n means for list/load/gc."""

from __future__ import annotations

from shimctl.errors import ExitCode
from shimctl.settings import DEFAULT_ADDRESS, DEFAULT_ROOT, DEFAULT_STATE
from tests.support.helpers import Node

from .runner import shimctl


def _option_help(text: str, option: str) -> str:
    """The help of one option: its line and the indented lines that continue it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith(option))
    out = [lines[start]]
    for line in lines[start + 1 :]:
        if line.lstrip().startswith("-") or not line.startswith(" " * 10):
            break
        out.append(line)
    return " ".join(" ".join(out).split())


def test_help_shows_the_defaults(node: Node) -> None:
    proc = shimctl(node, "--help", env={"COLUMNS": "200"})
    assert proc.returncode == ExitCode.OK
    assert f"[default: {DEFAULT_ROOT}, or root in the config]" in _option_help(
        proc.stdout, "--root"
    )
    assert f"[default: {DEFAULT_STATE}, or state in the config]" in _option_help(
        proc.stdout, "--state"
    )
    assert f"[default: {DEFAULT_ADDRESS}" in _option_help(proc.stdout, "--address")
    ns = _option_help(proc.stdout, "-n, --namespace")
    assert "[default: default]" in ns and "list, load, gc and events cover every namespace" in ns


def test_help_reads_no_config(node: Node) -> None:
    bad = node.base / "bad.toml"
    bad.write_text("root = [\n")
    proc = shimctl(node, "--config", str(bad), "--help")
    assert proc.returncode == ExitCode.OK and proc.stderr == ""
    assert shimctl(node, "--config", str(bad), "list").returncode == ExitCode.INVALID_ARGUMENT
