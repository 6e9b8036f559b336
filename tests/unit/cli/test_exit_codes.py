"""ExitCode is the one table of exit statuses; error classes, docs and the program use it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shimctl import errors
from shimctl.errors import ExitCode
from tools import docgen

REPO = Path(__file__).resolve().parents[3]

# The documented statuses (README "Exit codes"): numbers a cron line or a script relies on.
DOCUMENTED = {
    "OK": 0,
    "UNKNOWN": 1,
    "INVALID_ARGUMENT": 2,
    "NOT_FOUND": 3,
    "ALREADY_EXISTS": 4,
    "FAILED_PRECONDITION": 5,
    "UNAVAILABLE": 6,
    "DEADLINE_EXCEEDED": 7,
    "NOT_IMPLEMENTED": 8,
    "PROTOCOL": 9,
    "UNSAFE": 10,
    "ACTIONS_FAILED": 11,
    "GARBAGE_FOUND": 12,
    "INTERRUPTED": 130,
    "BROKEN_PIPE": 141,
}


def test_every_documented_code_is_a_member() -> None:
    assert {m.name: int(m) for m in ExitCode} == DOCUMENTED


def test_every_member_has_a_one_line_meaning() -> None:
    for member in ExitCode:
        assert member.meaning and "\n" not in member.meaning, member


def test_error_classes_name_their_member() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.ShimctlError)
    ]
    assert len(classes) >= 11
    for cls in classes:
        assert type(cls.exit_code) is ExitCode, cls


def test_readme_and_man_page_tables_come_from_exit_code() -> None:
    readme = (REPO / "README.md").read_text()
    man = (REPO / "docs" / "shimctl.1").read_text()
    for member in ExitCode:
        assert f"| {int(member)} | " in readme
        assert f"\\fB{int(member)}\\fR\n" in man
    assert docgen.readme_with_exit_codes(readme) == readme


def test_readme_without_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="exit-codes"):
        docgen.readme_with_exit_codes("# no table here\n")


def test_no_literal_exit_statuses_outside_errors_py() -> None:
    """130, 141 and 11 are named, not written as numbers, anywhere in the program."""
    offenders = []
    for path in (REPO / "shimctl").rglob("*.py"):
        if path.name == "errors.py" or "proto" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(
                f"exit({v})" in code or f"= {v}\n" in code + "\n" or f"return {v}\n" in code + "\n"
                for v in (11, 130, 141)
            ):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []


def test_docgen_check_finds_a_stale_readme_table(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    stale = readme.replace(f"| {int(ExitCode.UNSAFE)} | ", "| 99 | ", 1)
    (tmp_path / "README.md").write_text(stale)
    argv = [sys.executable, "-m", "tools.docgen", "--repo", str(tmp_path), "man"]
    check = subprocess.run([*argv, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "stale: README.md" in check.stderr
    subprocess.run(argv, check=True, capture_output=True)
    assert (tmp_path / "README.md").read_text() == readme
