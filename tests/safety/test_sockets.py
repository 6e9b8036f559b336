"""The shared shim socket dir (/run/containerd/s, hard-coded in every runc shim whatever
containerd's state dir): gc removes only the stale sockets provably of its own containerd (named
as its shims derive them for a namespace/id it knows) unless --remove-foreign-sockets, and never
a socket someone listens on."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import Node, shim_socket_path
from tests.support.safetykit import clean_exit, cli, derived_socket, findings

pytestmark = pytest.mark.usefixtures("socket_dir_exclusive")

# Another containerd on the node (Docker's own, say): its shims share the socket dir.
OTHER_CONTAINERD = "/run/other-containerd/containerd.sock"


@pytest.fixture
def made(node: Node) -> Iterator[list[Path]]:
    """Sockets the test makes in the shared dir, removed at its end if gc left them."""
    paths: list[Path] = []
    yield paths
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def closed_socket(path: Path, made: list[Path]) -> Path:
    """A socket that listened and was closed (a shim killed with -9 leaves one), a minute old."""
    made.append(path)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        s.listen()
    st = os.lstat(path)
    os.utime(path, (st.st_atime, st.st_mtime - 60), follow_symlinks=False)
    return path


def test_gc_removes_its_own_stale_sockets_and_reports_foreign_ones(
    node: Node, made: list[Path]
) -> None:
    # The id the node knows: a work dir whose bundle is gone (a shim of it was killed).
    (node.task_root / "default" / "gone1").mkdir(parents=True)
    ours = closed_socket(derived_socket(node, "gone1"), made)
    theirs = closed_socket(shim_socket_path(OTHER_CONTAINERD, "default", "gone1"), made)
    unknown_id = closed_socket(derived_socket(node, "never-here"), made)

    first = cli(node, "--timeout", "1", "gc", "--min-age", "0", "--json")

    clean_exit(first, 0)
    found = findings(first)
    assert found[("", ours.name)]["outcome"] == "done"
    assert not os.path.lexists(ours)
    for foreign in (theirs, unknown_id):
        f = found[("", foreign.name)]
        assert (f["kind"], f["action"], f["outcome"]) == ("stale-socket", "report", None)
        assert "another containerd's" in str(f["reason"])
        assert "--remove-foreign-sockets" in str(f["reason"])
        assert os.path.lexists(foreign)

    second = cli(node, "--timeout", "1", "gc", "--min-age", "0", "--remove-foreign-sockets")

    clean_exit(second, 0)
    assert not os.path.lexists(theirs) and not os.path.lexists(unknown_id)


def test_a_listening_foreign_socket_is_never_touched(node: Node, made: list[Path]) -> None:
    path = shim_socket_path(OTHER_CONTAINERD, "default", "live1")
    made.append(path)
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(path))
        listening.listen()
        st = os.lstat(path)
        os.utime(path, (st.st_atime, st.st_mtime - 60), follow_symlinks=False)

        proc = cli(node, "--timeout", "1", "gc", "--min-age", "0", "--remove-foreign-sockets")

        clean_exit(proc, 0)
        assert ("", path.name) not in findings(cli(node, "--timeout", "1", "list", "--json"))
        assert os.path.lexists(path)
        listening.settimeout(5)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))  # still the test's own listener
