"""The shared fixtures and helpers themselves work (tests/conftest.py, tests/support/helpers.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import helpers
from tests.support.helpers import (
    SHIM_SOCKET_DIR,
    Node,
    ShimLeakWarning,
    pid_alive,
    populate_busybox_rootfs,
    run_cli,
    safety_net,
    shim_socket_path,
    teardown_node,
    wait_gone,
)

# --- pure helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elems", "joined"),
    [
        (
            ("/run/containerd/containerd.sock", "default", "c1"),
            "/run/containerd/containerd.sock/default/c1",
        ),
        (("/a/", "ns", "id"), "/a/ns/id"),
        (("/a//b", "", "id"), "/a/b/id"),  # empty elements are skipped
        (("//a", "ns", "id"), "/a/ns/id"),  # Go's Clean: no special leading //
        (("/a/./b/../c", "ns", "k"), "/a/c/ns/k"),
        (("/a", "ns", "../x"), "/a/x"),
        (("/", "..", "k"), "/k"),
        (("rel/sock", "ns", "k"), "rel/sock/ns/k"),
        (("", "", ""), ""),
    ],
)
def test_go_filepath_join(elems: tuple[str, str, str], joined: str) -> None:
    assert helpers.go_filepath_join(*elems) == joined


def test_shim_socket_path_matches_spec_formula() -> None:
    # layout.md §7: sha256("<address>/<ns>/<key>"), lowercase hex, under /run/containerd/s.
    import hashlib

    want = hashlib.sha256(b"/run/containerd/containerd.sock/default/mypod").hexdigest()
    got = shim_socket_path("/run/containerd/containerd.sock", "default", "mypod")
    assert got == Path("/run/containerd/s") / want
    assert len(str(got)) == 82
    assert shim_socket_path("/x//y/", "ns", "k") == shim_socket_path("/x/y", "ns", "k")


def test_argv_has_address_is_exact() -> None:
    a = "/tmp/t/containerd.sock"
    assert helpers.argv_has_address(["shim", "-namespace", "n", "-id", "i", "-address", a], a)
    assert helpers.argv_has_address(["shim", "--address", a], a)
    assert helpers.argv_has_address(["shim", f"-address={a}"], a)
    assert not helpers.argv_has_address(["shim", "-address", a + ".ttrpc"], a)
    assert not helpers.argv_has_address(["shim", "--ttrpc-address", a], a)
    assert not helpers.argv_has_address(["shim", a, "-address"], a)
    assert not helpers.argv_has_address(["containerd-shim-runc-v2"], a)


def test_socket_path_from_address_only_under_shim_dir() -> None:
    f = helpers.socket_path_from_address
    assert f("unix:///run/containerd/s/abc") == Path("/run/containerd/s/abc")
    assert f("unix:///run/containerd/s/abc\n") == Path("/run/containerd/s/abc")
    assert f("unix:///run/containerd/s/../x") is None
    assert f("unix:///run/containerd/s") is None
    assert f("unix:///tmp/abc") is None
    assert f("/run/containerd/s/abc") is None  # abstract socket name, not a file
    assert f("") is None


# --- node -------------------------------------------------------------------------------------


def test_node_layout(node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert node.base == tmp_path
    assert node.root == tmp_path / "root" and node.root.is_dir()
    assert node.state == tmp_path / "state" and node.state.is_dir()
    assert node.address == str(tmp_path / "containerd.sock")
    assert node.ttrpc_address == node.address + ".ttrpc"
    assert node.namespace == "default"
    assert node.cli_args() == [
        "--root",
        str(tmp_path / "root"),
        "--state",
        str(tmp_path / "state"),
        "--address",
        node.address,
        "--ttrpc-address",
        node.address + ".ttrpc",
    ]
    assert node.bundle("x") == tmp_path / "state/io.containerd.runtime.v2.task/default/x"
    assert node.workdir("x", "ns") == tmp_path / "root/io.containerd.runtime.v2.task/ns/x"
    monkeypatch.setenv("SHIMCTL_ROOT", "/nope")
    monkeypatch.setenv("NO_COLOR", "0")
    env = node.env()
    assert env["NO_COLOR"] == "1"
    assert [k for k in env if k.startswith("SHIMCTL_")] == ["SHIMCTL_CONFIG"]
    assert env["SHIMCTL_CONFIG"] == str(node.base / "no-config.toml")
    assert env["PATH"] == os.environ["PATH"]
    with pytest.raises(AttributeError):
        node.namespace = "other"  # type: ignore[misc]


def test_run_cli_invocation(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, object]]] = []

    def fake_run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append((argv, kw))
        return subprocess.CompletedProcess(argv, 0, "out", "err")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setenv("SHIMCTL_X", "1")
    res = run_cli(node, "list", "--json")
    assert res.stdout == "out"
    argv, kw = calls[0]
    assert argv == [sys.executable, "-m", "shimctl", *node.cli_args(), "list", "--json"]
    assert kw["stdin"] is subprocess.DEVNULL and "input" not in kw
    assert kw["text"] is True and kw["capture_output"] is True and kw["timeout"] == 60
    env = kw["env"]
    assert isinstance(env, dict) and "SHIMCTL_X" not in env and env["NO_COLOR"] == "1"
    run_cli(node, "x", stdin_text="data", timeout=5)
    _, kw = calls[1]
    assert kw["input"] == "data" and "stdin" not in kw and kw["timeout"] == 5


def test_require_real_binaries_skips_or_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(helpers, "BUSYBOX", tmp_path / "no-busybox")
    assert any("no-busybox" in m for m in helpers.missing_real_binaries())
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-busybox"):
        helpers.require_real_binaries()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-busybox"):
        helpers.require_real_binaries()


# --- processes --------------------------------------------------------------------------------


def test_pid_alive_and_wait_gone() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        import psutil

        ct = psutil.Process(proc.pid).create_time()
        assert pid_alive(proc.pid)
        assert pid_alive(proc.pid, ct)
        assert not pid_alive(proc.pid, ct - 10)  # another create_time = another process
        assert not wait_gone(proc.pid, ct, timeout=0.1)
        proc.kill()
        assert wait_gone(proc.pid, ct, timeout=5)  # a zombie (not yet reaped) counts as gone
        assert not pid_alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not pid_alive(proc.pid, ct)


def test_populate_busybox_rootfs(tmp_path: Path) -> None:
    if not helpers.BUSYBOX.is_file():
        pytest.skip("no /bin/busybox")
    rootfs = tmp_path / "rootfs"
    populate_busybox_rootfs(rootfs)
    populate_busybox_rootfs(rootfs)  # idempotent
    assert (rootfs / "bin/busybox").stat().st_mode & 0o111
    for applet in ("sh", "sleep", "true", "false", "cat", "echo", "ls"):
        assert os.readlink(rootfs / "bin" / applet) == "busybox"
    out = subprocess.run(
        [str(rootfs / "bin/echo"), "hi"], capture_output=True, text=True, check=True
    )
    assert out.stdout == "hi\n"


# --- safety net -------------------------------------------------------------------------------


@pytest.fixture
def shim_socket_dir() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root for /run/containerd/s")
    SHIM_SOCKET_DIR.mkdir(mode=0o600, parents=True, exist_ok=True)  # as the shim makes it
    return SHIM_SOCKET_DIR


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def _sleeper(argv_tail: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    code = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code, *argv_tail], cwd=cwd)


def _wait_started(pid: int, marker: str) -> None:
    import psutil

    deadline = time.monotonic() + 10
    while marker not in psutil.Process(pid).cmdline():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_safety_net_kills_leak_warns_and_removes_socket(
    node: Node, shim_socket_dir: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    bundle = node.bundle("leak1")
    bundle.mkdir(parents=True)
    stale = shim_socket_dir / ("test-" + secrets.token_hex(16))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))  # the socket file stays after close, as after a SIGKILLed shim
    (bundle / "address").write_text(f"unix://{stale}")
    # a second bundle whose socket nobody owns: removed by the bundle sweep
    other = node.bundle("leak2", "ns2")
    other.mkdir(parents=True)
    stale2 = shim_socket_dir / ("test-" + secrets.token_hex(16))
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale2))
    (other / "address").write_text(f"unix://{stale2}")
    # a live listener named by a bundle must be left alone
    live_bundle = node.bundle("live")
    live_bundle.mkdir(parents=True)
    live = shim_socket_dir / ("test-" + secrets.token_hex(16))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(live))
    listener.listen()
    (live_bundle / "address").write_text(f"unix://{live}")

    leak = _sleeper(["-namespace", "default", "-id", "leak1", "-address", node.address], bundle)
    decoys = [
        _sleeper(["-address", node.address + ".other"], node.base),
        _sleeper(["--ttrpc-address", node.address], node.base),
    ]
    sleepers.extend([leak, *decoys])
    for p in (leak, *decoys):
        _wait_started(p.pid, "-c")
    try:
        props: list[tuple[str, object]] = []
        with pytest.warns(ShimLeakWarning, match=rf"killed pid {leak.pid}\b"):
            report = teardown_node(node, props, "the::test")
        assert [r.pid for r in report.killed] == [leak.pid]
        assert report.killed[0].bundle == bundle
        assert not pid_alive(leak.pid)
        assert all(pid_alive(d.pid) for d in decoys)
        assert not stale.exists() and not stale2.exists()
        assert set(report.sockets_removed) == {stale, stale2}
        assert live.exists()
        assert props and props[0][0] == helpers.LEAK_PROPERTY
        assert str(leak.pid) in str(props[0][1]) and "the::test" in str(props[0][1])
        # nothing left: a second pass is a no-op
        again = safety_net(node)
        assert not again.leaked and not again.sockets_removed
    finally:
        listener.close()
        for path in (stale, stale2, live):
            path.unlink(missing_ok=True)


# --- a real shim ------------------------------------------------------------------------------


@pytest.mark.real
def test_real_shim_start_then_safety_net(
    node: Node, tmp_path: Path, socket_dir_shared: None
) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True, capture_output=True)
    bundle = node.bundle("fx1")
    bundle.mkdir(parents=True)
    shutil.copy(spec_dir / "config.json", bundle / "config.json")
    os.mkfifo(bundle / "log", 0o700)
    expected = shim_socket_path(node.address, "default", "fx1")
    log_fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)
    try:
        res = subprocess.run(
            [
                "containerd-shim-runc-v2",
                "-namespace",
                "default",
                "-address",
                node.address,
                "-publish-binary",
                "/usr/bin/containerd",
                "-id",
                "fx1",
                "start",
            ],
            cwd=bundle,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**node.env(), "TTRPC_ADDRESS": node.ttrpc_address},
            timeout=30,
            check=False,
        )
        try:
            assert res.returncode == 0, res.stderr
            assert res.stdout == "unix://" + str(expected)
            assert (bundle / "address").read_text() == res.stdout
            shims = helpers.find_address_processes(node.address)
            assert len(shims) == 1, shims
            shim = shims[0]
            assert shim.argv[1:] == (
                "-namespace",
                "default",
                "-id",
                "fx1",
                "-address",
                node.address,
            )
            assert shim.bundle == bundle and shim.socket == expected
            assert expected.exists() and helpers.socket_has_listener(expected)

            report = safety_net(node)  # what the node fixture runs at teardown

            assert [r.pid for r in report.killed] == [shim.pid]
            assert not pid_alive(shim.pid, shim.create_time)
            assert not expected.exists()
            assert expected in report.sockets_removed
            assert helpers.find_address_processes(node.address) == []
        finally:
            # belt and braces if an assertion above failed (the fixture would also do it)
            safety_net(node)
            expected.unlink(missing_ok=True)
    finally:
        os.close(log_fd)


@pytest.mark.real
def test_safety_net_deletes_leaked_runc_container(node: Node, tmp_path: Path) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    subprocess.run(["runc", "spec"], cwd=spec_dir, check=True, capture_output=True)
    spec = json.loads((spec_dir / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "120"]
    bundle = node.bundle("rc1")
    populate_busybox_rootfs(bundle / "rootfs")
    (bundle / "config.json").write_text(json.dumps(spec))
    (bundle / "options.json").write_text(json.dumps({"root": str(node.runc_root)}))
    runc_root = str(node.runc_root / "default")
    runc = ["runc", "--root", runc_root]
    try:
        # stdio must not be pipes: the container process would keep them open
        subprocess.run(
            [*runc, "run", "-d", "rc1"],
            cwd=bundle,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=True,
        )
        state = json.loads(
            subprocess.run(
                [*runc, "state", "rc1"], capture_output=True, text=True, check=True
            ).stdout
        )
        assert state["status"] == "running"
        with pytest.warns(ShimLeakWarning, match="runc delete --force"):
            report = teardown_node(node)
        assert report.runc_deleted == [f"{runc_root}:rc1"]
        assert wait_gone(state["pid"], None, 5)
        assert not (node.runc_root / "default" / "rc1").exists()
    finally:
        subprocess.run(
            [*runc, "delete", "--force", "rc1"], capture_output=True, timeout=30, check=False
        )
