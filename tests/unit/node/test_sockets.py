"""Shim socket addresses: derivation (shimctl.node.sockets) and the one `unix://` reader
(shimctl.shim.address) that sockets, the ttrpc client, settings and evidence all use."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shimctl.errors import InvalidArgument
from shimctl.node import sockets
from shimctl.shim.address import (
    MAX_SOCKET_PATH,
    first_unix_path,
    parse_address,
    strip_unix,
    unix_address,
    unix_path,
)

SOCKET_DIR = Path("/run/containerd/s")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- derive_address ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "namespace", "key", "hashed"),
    [
        # The hashed string is Go's filepath.Join(address, ns, key), byte for byte.
        (
            "/run/containerd/containerd.sock",
            "default",
            "c1",
            "/run/containerd/containerd.sock/default/c1",
        ),
        (
            "//run/containerd/containerd.sock",
            "default",
            "c1",
            "/run/containerd/containerd.sock/default/c1",
        ),
        ("///run//x.sock/", "k8s.io", "pod", "/run/x.sock/k8s.io/pod"),
        ("/run/./x.sock", "ns", "id", "/run/x.sock/ns/id"),
        ("/run/a/../x.sock", "ns", "id", "/run/x.sock/ns/id"),
        ("relative.sock", "ns", "id", "relative.sock/ns/id"),
        ("", "ns", "id", "ns/id"),  # an empty element is skipped, as by Join
    ],
)
def test_derive_address_hashes_go_join(address: str, namespace: str, key: str, hashed: str) -> None:
    derived = sockets.derive_address(address, namespace, key, SOCKET_DIR)
    assert derived == f"unix://{SOCKET_DIR}/{_sha(hashed)}"


def test_derive_address_uses_the_given_socket_dir(tmp_path: Path) -> None:
    derived = sockets.derive_address("/a.sock", "ns", "id", tmp_path)
    assert derived == f"unix://{tmp_path}/{_sha('/a.sock/ns/id')}"


# -- the unix:// reader ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "path"),
    [
        ("unix:///run/x.sock", "/run/x.sock"),
        ("unix://relative", "relative"),
        ("unix://", ""),
        ("unix:////run//x", "//run//x"),  # as written: not normalised here
        ("/run/x.sock", None),
        ("abstract-name", None),
        ("UNIX:///run/x", None),  # the scheme is matched exactly
        ("", None),
    ],
)
def test_unix_path(address: str, path: str | None) -> None:
    assert unix_path(address) == path


@pytest.mark.parametrize(
    ("address", "stripped"),
    [
        ("unix:///run/c.sock", "/run/c.sock"),
        ("/run/c.sock", "/run/c.sock"),
        ("unix://", ""),
    ],
)
def test_strip_unix(address: str, stripped: str) -> None:
    assert strip_unix(address) == stripped


def test_unix_address_round_trips() -> None:
    assert unix_address(Path("/run/containerd/s/ab")) == "unix:///run/containerd/s/ab"
    assert unix_path(unix_address("/p")) == "/p"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("unix:///run/x", "/run/x"),
        ('{"version":3,"address":"unix:///run/y","protocol":"ttrpc"}', "/run/y"),
        ("  unix:///run/z \n", "/run/z"),
        ("unix:///a unix:///b", "/a unix:///b"),  # only the first; up to a quote
        ("no address here", None),
        ('{"address":"/plain"}', None),
    ],
)
def test_first_unix_path(text: str, path: str | None) -> None:
    assert first_unix_path(text) == path


@pytest.mark.parametrize(
    ("address", "socket_file"),
    [
        ("unix:///run/containerd/s/abc", "/run/containerd/s/abc"),
        # Linux reads `//run` as `/run`: one file, one key (posixpath.normpath keeps `//`).
        ("unix:////run//containerd/./s/abc", "/run/containerd/s/abc"),
        ("unix://relative", None),
        ("unix:///with\0nul", None),
        ("/not/unix", None),
        ("abstract", None),
    ],
)
def test_socket_file(address: str, socket_file: str | None) -> None:
    assert sockets.socket_file(address) == socket_file
    expected = Path(socket_file) if socket_file is not None else None
    assert sockets.socket_path(address) == expected


def test_parse_address_forms() -> None:
    assert parse_address("unix:///run/x.sock") == "/run/x.sock"
    assert parse_address("old-abstract") == b"\0old-abstract"
    with pytest.raises(InvalidArgument, match="absolute path"):
        parse_address("unix://relative")
    with pytest.raises(InvalidArgument, match="too long"):
        parse_address("unix:///" + "x" * MAX_SOCKET_PATH)
    parse_address("unix:///" + "x" * (MAX_SOCKET_PATH - 1))  # exactly the limit


# -- probing ---------------------------------------------------------------------------------


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "l.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    try:
        yield path
    finally:
        server.close()


def test_probe_states(tmp_path: Path, listening: Path) -> None:
    assert sockets.probe(listening) is sockets.SocketState.LISTENING
    assert sockets.probe(tmp_path / "missing") is sockets.SocketState.MISSING
    (tmp_path / "file").write_text("x")
    assert sockets.probe(tmp_path / "file") is sockets.SocketState.NOT_A_SOCKET
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()  # bound, never listened: connect is refused
    assert sockets.probe(dead) is sockets.SocketState.REFUSED


def test_probe_address_takes_both_forms(listening: Path) -> None:
    assert sockets.probe_address(str(listening)) is sockets.SocketState.LISTENING
    assert sockets.probe_address(f"unix://{listening}") is sockets.SocketState.LISTENING
    assert sockets.probe_address("unix://relative") is sockets.SocketState.MISSING


def test_remove_if_stale_only_removes_refusing_sockets_in_the_dir(
    tmp_path: Path, listening: Path
) -> None:
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(dead))
    s.close()
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    assert not sockets.remove_if_stale(f"unix://{dead}", other_dir)  # not in the socket dir
    assert dead.exists()
    assert not sockets.remove_if_stale(f"unix://{listening}", tmp_path)  # alive
    assert listening.exists()
    assert sockets.remove_if_stale(f"unix://{dead}", tmp_path)
    assert not dead.exists()
    assert not sockets.remove_if_stale(f"unix://{dead}", tmp_path)  # already gone


def test_listening_paths_shows_a_listening_socket_and_not_a_bound_one(tmp_path: Path) -> None:
    import socket as socketlib

    from shimctl.node.sockets import listening_paths

    listening = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    bound = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
    try:
        listening.bind(str(tmp_path / "l.sock"))
        listening.listen(1)
        bound.bind(str(tmp_path / "b.sock"))  # bound, never listening: refuses connections
        paths = listening_paths()
        assert str(tmp_path / "l.sock") in paths
        assert str(tmp_path / "b.sock") not in paths
    finally:
        listening.close()
        bound.close()
