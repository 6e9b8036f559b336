"""Where each containerd generation's binaries are: 1.6 (the machine's own packages), 1.7 and
2.1 (Debian trixie's and sid's, unpacked by scripts/fetch-containerd.sh into a cache outside
the clone, described by ``<cache>/<suite>.env``).

:func:`generation` looks one up; :meth:`Generation.require` skips the calling test when the
binaries are missing (fails it when ``CI=true``). Nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.helpers import BUSYBOX, CONTAINERD_BINARY, RUNC_BINARY, SHIM_BINARY

CACHE = Path(os.environ.get("SHIMCTL_CONTAINERD_CACHE", "/var/cache/shimctl-containerd"))
FETCH_HINT = "run scripts/fetch-containerd.sh (make deps does)"

#: Matrix order: (suite, the generation it ships). The machine's own suite is "system".
SUITES = (("system", "1.6"), ("trixie", "1.7"), ("sid", "2.1"))


@dataclass(frozen=True)
class Generation:
    """One containerd generation: its containerd, ctr, runc shim and runc binaries."""

    suite: str
    series: str  # "1.6", "1.7", "2.1": what the matrix expects from it
    containerd: str
    ctr: str
    shim: str
    runc: str
    containerd_package: str = ""
    runc_package: str = ""
    runc_libs: str = ""
    missing: str = ""  # why it cannot be used; empty when it can

    @property
    def version(self) -> str:
        """The upstream containerd version (``1.7.24`` of ``1.7.24~ds1-6+deb13u1``)."""
        m = re.match(r"\d+(?:\.\d+)+", self.containerd_package)
        return m.group(0) if m else self.series

    @property
    def major_minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)

    @property
    def cleans_leaked_shims(self) -> bool:
        """containerd's load rule for shims with no task exists from 1.7 on (manager.md §8.2)."""
        return self.major_minor >= (1, 7)

    @property
    def bootstrap_json(self) -> bool:
        """2.x shims print bootstrap params (task API v3); containerd stores bootstrap.json."""
        return self.major_minor >= (2, 0)

    @property
    def api_version(self) -> int:
        return 3 if self.bootstrap_json else 2

    @property
    def path_prefix(self) -> tuple[str, ...]:
        """Dirs to put first on PATH: this generation's shims, then its runc."""
        dirs: list[str] = []
        for binary in (self.shim, self.runc):
            d = str(Path(binary).parent)
            if d not in dirs:
                dirs.append(d)
        return tuple(dirs)

    def containerd_options(self) -> dict[str, Any]:
        """Keyword arguments for :class:`tests.support.containerd.Containerd`."""
        return {
            "binary": self.containerd,
            "ctr_binary": self.ctr,
            "shim_binary": self.shim,
            "path_prefix": self.path_prefix,
        }

    def describe(self) -> str:
        libs = f" (with {self.runc_libs})" if self.runc_libs else ""
        return (
            f"{self.suite}: containerd {self.containerd_package}, "
            f"runc {self.runc_package}{libs}; {self.containerd}"
        )

    def require(self) -> None:
        """Skip the calling test (fail it when ``CI=true``) unless this generation is here."""
        problems = [self.missing] if self.missing else []
        if not BUSYBOX.is_file():
            problems.append(f"{BUSYBOX} (Debian package busybox-static)")
        if os.geteuid() != 0:
            problems.append("root privileges")
        if not problems:
            return
        msg = f"containerd {self.series} ({self.suite}) needs: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _read_env(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()
    return values


def _dpkg_version(package: str) -> str:
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return res.stdout.strip() if res.returncode == 0 else ""


def _system(series: str) -> Generation:
    found = {
        name: shutil.which(name) or ""
        for name in (CONTAINERD_BINARY, "ctr", SHIM_BINARY, RUNC_BINARY)
    }
    lacking = [name for name, path in found.items() if not path]
    return Generation(
        suite="system",
        series=series,
        containerd=found[CONTAINERD_BINARY],
        ctr=found["ctr"],
        shim=found[SHIM_BINARY],
        runc=found[RUNC_BINARY],
        containerd_package=_dpkg_version("containerd"),
        runc_package=_dpkg_version("runc"),
        missing=("not on PATH: " + ", ".join(lacking)) if lacking else "",
    )


def _fetched(suite: str, series: str) -> Generation:
    path = CACHE / f"{suite}.env"
    try:
        env = _read_env(path)
    except OSError:
        env = {}
    paths = {k: env.get(k, "") for k in ("containerd", "ctr", "shim", "runc")}
    missing = ""
    if not env:
        missing = f"{path} (not fetched; {FETCH_HINT})"
    else:
        lacking = [p or k for k, p in paths.items() if not p or not os.access(p, os.X_OK)]
        if lacking:
            missing = "missing binaries " + ", ".join(lacking) + f" ({FETCH_HINT})"
    return Generation(
        suite=suite,
        series=series,
        containerd_package=env.get("containerd_package", ""),
        runc_package=env.get("runc_package", ""),
        runc_libs=env.get("runc_libs", ""),
        missing=missing,
        **paths,
    )


def generation(suite: str) -> Generation:
    """The generation of ``suite`` ("system", "trixie" or "sid")."""
    series = dict(SUITES)[suite]
    gen = _system(series) if suite == "system" else _fetched(suite, series)
    if not gen.missing and not gen.version.startswith(series + "."):
        # The suite moved on (e.g. sid to 2.2): the matrix still runs, the id tells.
        series = ".".join(gen.version.split(".")[:2])
        gen = dataclasses.replace(gen, series=series)
    return gen


def all_generations() -> list[Generation]:
    """Every generation of the matrix, in order (missing ones included, see ``missing``)."""
    return [generation(suite) for suite, _ in SUITES]


def gen_id(gen: Generation) -> str:
    """The pytest id of a generation's parameter: its containerd version, or what is missing."""
    return f"containerd-{gen.version}" if not gen.missing else f"{gen.suite}-{gen.series}"
