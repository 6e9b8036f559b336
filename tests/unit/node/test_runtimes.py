"""Runtime name -> shim binary path (shim-binary.md §1-2): shimctl.node.runtimes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shimctl.errors import ExitCode, InvalidArgument, NotFound
from shimctl.node.runtimes import (
    binary_name,
    check_executable,
    recorded_binary_problem,
    resolve_runtime_path,
)

SHIM = "containerd-shim-runc-v2"
RUNTIME = "io.containerd.runc.v2"


def _exe(path: Path, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty cwd, two PATH dirs and a containerd dir; PATH is only the two PATH dirs."""
    d = {name: tmp_path / name for name in ("cwd", "p1", "p2", "containerd")}
    for path in d.values():
        path.mkdir()
    monkeypatch.setenv("PATH", f"{d['p1']}:{d['p2']}")
    return d


def _resolve(runtime: str, d: dict[str, Path]) -> str:
    return resolve_runtime_path(
        runtime, containerd_binary=str(d["containerd"] / "containerd"), cwd=str(d["cwd"])
    )


@pytest.mark.parametrize(
    ("runtime", "name"),
    [
        ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
        ("io.containerd.runc.v1", "containerd-shim-runc-v1"),
        ("runc.v2", "containerd-shim-runc-v2"),
        ("io.containerd.kata.v2", "containerd-shim-kata-v2"),
        ("a.b.", "containerd-shim-b-"),  # accepted as written
        (".runc.v2", None),  # reference: empty first part is invalid
        ("v2", None),
        ("", None),
    ],
)
def test_binary_name(runtime: str, name: str | None) -> None:
    assert binary_name(runtime) == name


def test_empty_runtime(dirs: dict[str, Path]) -> None:
    with pytest.raises(InvalidArgument, match="no runtime name"):
        _resolve("", dirs)


@pytest.mark.parametrize("runtime", [".runc.v2", "v2", "runc"])
def test_invalid_runtime_names(runtime: str, dirs: dict[str, Path]) -> None:
    _exe(dirs["p1"] / SHIM)  # would be found if the name were accepted
    with pytest.raises(InvalidArgument) as info:
        _resolve(runtime, dirs)
    assert str(info.value) == (
        f"invalid runtime name {runtime!r}, correct runtime name should be either format like "
        "`io.containerd.runc.v1` or a full path to the binary"
    )


def test_relative_path_with_slash_is_rejected(dirs: dict[str, Path]) -> None:
    # Reference behaviour; v1.6.20 would look for <cwd>/foo/containerd-shim-runc-v2.
    _exe(dirs["cwd"] / "foo" / SHIM)
    _exe(dirs["p1"] / SHIM)
    with pytest.raises(
        InvalidArgument, match=r"invalid runtime name 'foo/io\.containerd\.runc\.v2'"
    ):
        _resolve("foo/" + RUNTIME, dirs)


def test_absolute_path_exists_is_returned_unchanged(dirs: dict[str, Path]) -> None:
    # No exec-bit check and no name rule: any existing absolute path.
    target = dirs["cwd"] / "my shim"
    target.write_text("not executable")
    assert _resolve(str(target), dirs) == str(target)


def test_absolute_path_missing(dirs: dict[str, Path]) -> None:
    missing = dirs["cwd"] / "nope"
    _exe(dirs["p1"] / SHIM)
    with pytest.raises(NotFound) as info:
        _resolve(str(missing), dirs)
    assert str(info.value) == f"invalid custom binary path {missing}: No such file or directory"
    assert info.value.exit_code == ExitCode.NOT_FOUND


def test_beside_cwd_wins_over_path(dirs: dict[str, Path]) -> None:
    # BinaryPath: stat only, no exec-bit check.
    beside = dirs["cwd"] / SHIM
    beside.write_text("plain file")
    _exe(dirs["p1"] / SHIM)
    assert _resolve(RUNTIME, dirs) == str(beside)


def test_on_path_first_hit_wins(dirs: dict[str, Path]) -> None:
    _exe(dirs["p2"] / SHIM)
    assert _resolve(RUNTIME, dirs) == str(dirs["p2"] / SHIM)
    _exe(dirs["p1"] / SHIM)
    assert _resolve(RUNTIME, dirs) == str(dirs["p1"] / SHIM)


def test_path_skips_non_executable_and_directories(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _exe(dirs["p1"] / SHIM, mode=0o644)
    (dirs["p2"] / SHIM).mkdir()
    (dirs["p2"] / SHIM).chmod(0o755)
    later = dirs["p1"].parent / "p3"
    _exe(later / SHIM, mode=0o100)  # any execute bit counts
    monkeypatch.setenv("PATH", f"{dirs['p1']}:{dirs['p2']}:{later}")
    assert _resolve(RUNTIME, dirs) == str(later / SHIM)


def test_relative_path_element_is_made_absolute(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # An empty PATH element means ".", the process's cwd (not the `cwd` argument).
    proc_cwd = tmp_path / "proc-cwd"
    _exe(proc_cwd / SHIM)
    monkeypatch.chdir(proc_cwd)
    monkeypatch.setenv("PATH", f"{dirs['p1']}::{dirs['p2']}")
    assert _resolve(RUNTIME, dirs) == str(proc_cwd / SHIM)


def test_empty_path_searches_nothing(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Go's filepath.SplitList("") is empty: an empty PATH is not "." .
    proc_cwd = tmp_path / "proc-cwd"
    _exe(proc_cwd / SHIM)
    monkeypatch.chdir(proc_cwd)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(NotFound):
        _resolve(RUNTIME, dirs)
    monkeypatch.delenv("PATH")
    with pytest.raises(NotFound):
        _resolve(RUNTIME, dirs)


def test_beside_containerd_when_not_on_path(dirs: dict[str, Path]) -> None:
    # stat only: the file beside containerd need not be executable.
    beside = dirs["containerd"] / SHIM
    beside.write_text("x")
    assert _resolve(RUNTIME, dirs) == str(beside)
    _exe(dirs["p2"] / SHIM)
    assert _resolve(RUNTIME, dirs) == str(dirs["p2"] / SHIM)


def test_bare_publish_binary_has_no_beside(
    dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    proc_cwd = tmp_path / "proc-cwd"
    _exe(proc_cwd / SHIM)
    monkeypatch.chdir(proc_cwd)
    with pytest.raises(NotFound):
        resolve_runtime_path(RUNTIME, containerd_binary="containerd", cwd=str(dirs["cwd"]))
    with pytest.raises(NotFound):
        resolve_runtime_path(RUNTIME, containerd_binary="", cwd=str(dirs["cwd"]))


def test_not_found_message(dirs: dict[str, Path]) -> None:
    with pytest.raises(NotFound) as info:
        _resolve("io.containerd.kata.v2", dirs)
    assert str(info.value) == (
        'runtime "io.containerd.kata.v2" binary not installed "containerd-shim-kata-v2": '
        "file does not exist"
    )
    assert info.value.hint is not None and "containerd-shim-kata-v2" in info.value.hint
    assert info.value.exit_code == ExitCode.NOT_FOUND


def test_default_cwd_is_root(dirs: dict[str, Path]) -> None:
    # containerd's cwd is "/": without `cwd`, BinaryPath looks at /containerd-shim-X-Y.
    assert not os.path.exists("/containerd-shim-nosuch-v9")
    with pytest.raises(NotFound):
        resolve_runtime_path("io.containerd.nosuch.v9", containerd_binary="")


def test_check_executable(tmp_path: Path) -> None:
    good = _exe(tmp_path / "good")
    check_executable(str(good))
    with pytest.raises(InvalidArgument, match="is a directory"):
        check_executable(str(tmp_path))
    plain = _exe(tmp_path / "plain", mode=0o644)
    with pytest.raises(InvalidArgument) as info:
        check_executable(str(plain))
    assert str(info.value) == f"shim binary {plain} is not executable"
    assert info.value.hint == f"chmod +x {plain}"
    with pytest.raises(NotFound, match="No such file or directory"):
        check_executable(str(tmp_path / "missing"))


# -- a bundle's recorded shim binary ---------------------------------------------------------


def test_recorded_binary_problem(tmp_path: Path) -> None:
    """The one check both `delete`'s verb and gc's evidence use: absolute, a regular file,
    executable; the message names the bundle file it came from."""
    good = _exe(tmp_path / "shim")
    assert recorded_binary_problem(str(good)) is None
    assert recorded_binary_problem("bin/shim") == "shim-binary-path 'bin/shim' is not absolute"
    missing = recorded_binary_problem(str(tmp_path / "missing"))
    assert (
        missing
        == f"shim-binary-path: shim binary {tmp_path / 'missing'}: No such file or directory"
    )
    assert (
        recorded_binary_problem(str(tmp_path))
        == f"shim-binary-path: shim binary {tmp_path} is a directory"
    )
    plain = _exe(tmp_path / "plain", mode=0o644)
    assert (
        recorded_binary_problem(str(plain))
        == f"shim-binary-path: shim binary {plain} is not executable"
    )
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert recorded_binary_problem(str(fifo)) == (
        f"shim-binary-path: shim binary {fifo} is not a regular file"
    )
