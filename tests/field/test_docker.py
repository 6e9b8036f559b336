"""shimctl beside a real Docker (Debian's docker.io over a private containerd 1.6).

Docker's containers in every state it makes on its own — running, exec'd, paused, ``--init``,
``--restart always`` — are live: ``shimctl gc --min-age 0`` must leave them (and their shims)
alone, a second gc must find nothing to do, and ``shimctl list`` must show them.
"""

from __future__ import annotations

import psutil
import pytest

from tests.field.killpoints import parent
from tests.field.shimctl_run import acted, findings, gc, listing
from tests.support.docker import NAMESPACE, Docker

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")


def _identity(pid: int) -> tuple[int, float]:
    return pid, psutil.Process(pid).create_time()


def _alive(ident: tuple[int, float]) -> bool:
    try:
        ps = psutil.Process(ident[0])
        return abs(ps.create_time() - ident[1]) < 1e-3 and ps.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_docker_containers_are_left_alone(docker: Docker) -> None:
    ids = {
        "running": docker.run("f-running"),
        "execd": docker.run("f-execd"),
        "paused": docker.run("f-paused"),
        "init": docker.run("f-init", options=["--init"]),
        "restart": docker.run("f-restart", options=["--restart", "always"]),
    }
    docker.docker("exec", "-d", "f-execd", "/bin/sleep", "600")
    docker.docker("pause", "f-paused")
    expected = {name: ("paused" if name == "paused" else "running") for name in ids}
    procs = {}
    for name in ids:
        status, pid = docker.state(f"f-{name}")
        assert status == expected[name], (name, status)
        procs[name] = _identity(pid)
    node = docker.node
    bundles = {name: node.bundle(cid, NAMESPACE) for name, cid in ids.items()}
    assert all(b.is_dir() for b in bundles.values()), bundles

    listed = listing(node)
    for name, cid in ids.items():
        assert cid in listed, (name, sorted(listed))
        assert listed[cid]["namespace"] == NAMESPACE

    first = gc(node)
    assert not acted(first), acted(first)
    found = findings(first)
    for name, cid in ids.items():
        assert found[cid]["action"] == "keep", found[cid]
        assert bundles[name].is_dir(), name
        assert _alive(procs[name]), name
        assert docker.state(f"f-{name}") == (expected[name], procs[name][0]), name
    # docker exec's process is still there: the exec'd container has two processes.
    execd = parent(procs["execd"][0])
    assert len([c for c in execd.children() if "sleep" in " ".join(c.cmdline())]) == 2

    second = gc(node)
    assert not acted(second), acted(second)
    # Docker still drives them all.
    docker.docker("unpause", "f-paused")
    docker.docker("restart", "-t", "1", "f-restart")
    assert docker.state("f-restart")[0] == "running"
    assert docker.state("f-paused") == ("running", procs["paused"][0])
