"""What a real client's containers leave on the machine, found and swept by their own marks.

A field test gives its containers a cgroup parent and a runc root of its own, so what they
leave is provably theirs: the runc state dirs under that root, the cgroups under that parent
(in every hierarchy), the processes in those cgroups (a ``runc init`` whose shim is gone
has no other mark: its bundle may be deleted), and mounts under the test's dirs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNC = "runc"


def cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup dir named ``parent`` or under it, in every hierarchy (v1 and v2)."""
    rel = parent.strip("/")
    tops = [CGROUP_ROOT, *CGROUP_ROOT.iterdir()] if CGROUP_ROOT.is_dir() else []
    found: list[Path] = []
    for top in tops:
        base = top / rel
        if base.is_dir():
            found += [p for p in base.rglob("*") if p.is_dir()]
            found.append(base)
    return found


def cgroup_pids(parent: str) -> set[int]:
    """PIDs of the processes in ``parent``'s cgroups (any hierarchy)."""
    pids: set[int] = set()
    for path in cgroup_dirs(parent):
        with contextlib.suppress(OSError):
            pids.update(int(x) for x in (path / "cgroup.procs").read_text().split())
    return pids


def runc_states(runc_root: Path) -> list[Path]:
    """runc's container state files under ``runc_root`` (``<root>/<id>/state.json``)."""
    return sorted(runc_root.glob("*/state.json"))


def find(parent: str, runc_roots: Iterable[Path], mount_bases: Iterable[Path]) -> list[str]:
    """Human-readable leftovers: processes, runc state, child cgroups, mounts."""
    from shimctl.node.mounts import mount_points_under

    left = [f"process {pid} {describe(pid)}" for pid in sorted(cgroup_pids(parent))]
    for root in runc_roots:
        left += [f"runc state {p.parent}" for p in runc_states(root)]
    left += [f"cgroup {p}" for p in sorted(cgroup_dirs(parent)) if p.name != parent.strip("/")]
    for base in mount_bases:
        left += [f"mount {m}" for m in mount_points_under(base)]
    return left


def describe(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:120]
    except psutil.Error:
        return "(gone)"


def sweep(parent: str, runc_roots: Iterable[Path], runc: str = RUNC) -> None:
    """Remove what :func:`find` reports (the teardown after a test that leaked):
    ``runc delete --force`` each state, SIGKILL what is still in the cgroups (each PID
    checked to be in them right before), rmdir the cgroups, deepest first."""
    for root in runc_roots:
        for state in runc_states(root):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [runc, "--root", str(root), "delete", "--force", state.parent.name],
                    capture_output=True,
                    timeout=10,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
    for pid in cgroup_pids(parent):
        if pid in cgroup_pids(parent):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in cgroup_pids(parent):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(timeout=5)
    remove_cgroups(parent)


def remove_cgroups(parent: str) -> list[str]:
    """rmdir ``parent``'s cgroups (empty ones), deepest first; returns those still there."""
    left: list[str] = []
    for path in sorted(cgroup_dirs(parent), key=lambda p: len(p.parts), reverse=True):
        try:
            path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            left.append(str(path))
    return left
