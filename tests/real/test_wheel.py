"""`python -m build` makes a wheel whose `shimctl` works in a fresh venv.

Offline: the wheel is built without build isolation (setuptools is a dev dependency), installed
with --no-index, and its runtime dependencies are the ones already installed here, made visible
to the venv one distribution at a time (the closure of the wheel's own Requires-Dist), never the
source tree or the editable install.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from shimctl import __version__

REPO = Path(__file__).resolve().parents[2]
PIP_OFFLINE = ("--no-index", "--no-deps", "--disable-pip-version-check", "-q")
_SKIP_DIRS = {".git", "build", "dist", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def _copy_source(dest: Path) -> None:
    def ignore(_dir: str, names: list[str]) -> set[str]:
        return {
            n
            for n in names
            if n in _SKIP_DIRS
            or n == "__pycache__"
            or n.endswith(".egg-info")
            or n.startswith(".hypothesis")
            or n == ".benchmarks"
        }

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    _copy_source(src)
    out = tmp / "dist"
    if importlib.util.find_spec("build") is not None:
        argv = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)]
    else:  # the dev extra has `build`; pip works too
        argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        argv += ["--no-index", "-w", str(out), "."]
    proc = subprocess.run(argv, cwd=src, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = out.glob("shimctl-*.whl")
    return wheel


def _requirement_names(requires: list[str] | None) -> list[str]:
    """Names of the requirements that apply here: environment markers are evaluated (click's
    `colorama; platform_system == "Windows"` is not one), extras are not asked for."""
    names = []
    for text in requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        names.append(req.name)
    return names


def _top_level(dist: md.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    tops = set()
    for f in dist.files or []:
        top = f.parts[0]
        if top.endswith((".dist-info", ".data")) or top in ("..", "__pycache__"):
            continue
        tops.add(top.removesuffix(".py") if len(f.parts) == 1 else top)
    return tops


def dependency_dir(requires: list[str], dest: Path) -> list[str]:
    """Symlink the installed closure of `requires` into `dest`; returns the dist names."""
    dest.mkdir()
    seen: set[str] = set()
    todo = _requirement_names(requires)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = md.distribution(name)
        todo += _requirement_names(dist.requires)
        site = Path(str(dist.locate_file("")))
        for top in _top_level(dist):
            for candidate in (site / top, *site.glob(f"{top}.*")):
                if candidate.exists() and not (dest / candidate.name).exists():
                    (dest / candidate.name).symlink_to(candidate)
    return sorted(seen)


@pytest.mark.slow
def test_wheel_installs_and_runs_in_a_clean_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    assert wheel.name.startswith(f"shimctl-{__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(f"shimctl-{__version__}.dist-info/METADATA").decode()
        entry = zf.read(f"shimctl-{__version__}.dist-info/entry_points.txt").decode()
    assert "shimctl/shim/proto/task.proto" in names or any(
        n.startswith("shimctl/shim/proto/") and n.endswith(".proto") for n in names
    )
    assert any(n.startswith("shimctl/shim/proto/") and n.endswith("_pb2.py") for n in names)
    assert not any(n.startswith("tests/") for n in names)
    assert "shimctl = shimctl.cli.app:entry" in entry
    requires = [
        line.split(":", 1)[1].strip()
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:")
    ]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", *PIP_OFFLINE, str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    deps = dependency_dir(requires, tmp_path / "deps")
    assert {"click", "rich", "psutil", "pydantic", "protobuf"} <= set(deps)
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_offline_deps.pth").write_text(str(tmp_path / "deps") + "\n")
    assert purelib != sysconfig.get_paths()["purelib"]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SHIMCTL_"))}
    env["NO_COLOR"] = "1"
    env["SHIMCTL_CONFIG"] = str(tmp_path / "none.toml")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    where = run(str(py), "-c", "import shimctl; print(shimctl.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(purelib), where.stdout  # the wheel's copy
    shimctl = venv / "bin" / "shimctl"
    helped = run(str(shimctl), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "Usage: shimctl [OPTIONS] COMMAND" in helped.stdout
    for command in ("start", "delete", "list", "gc", "logs", "publish", "events", "doctor"):
        assert f"  {command} " in helped.stdout
    assert run(str(shimctl), "--version").stdout == f"shimctl, version {__version__}\n"
    # A command that imports the heavy dependencies (psutil, protobuf, pydantic-free path).
    state = tmp_path / "state"
    state.mkdir()  # root and state must exist: a missing one is an error, not an empty list
    (tmp_path / "root").mkdir()
    listed = run(
        str(shimctl), "--root", str(tmp_path / "root"), "--state", str(state),
        "--address", str(tmp_path / "c.sock"), "-n", "default", "list", "--json",
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert '"command": "list"' in listed.stdout


def test_requirement_names_honour_environment_markers() -> None:
    # click's own Requires-Dist: colorama only on Windows, never demanded on Linux.
    names = _requirement_names(
        ['colorama; platform_system == "Windows"', "psutil>=5.9", 'pytest>=8; extra == "dev"']
    )
    assert names == ["psutil"]
