"""Hostile or corrupt state dirs: every run finishes with a clear result (no traceback), reports
the odd item, follows no link out of root/state, and signals no process that is not the shim
it means."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shimctl.errors import ExitCode
from tests.support.fakeshim import FakeShim
from tests.support.helpers import Node, pid_alive, wait_gone
from tests.support.safetykit import (
    Fakes,
    backdate,
    clean_exit,
    cli,
    derived_socket,
    findings,
    make_bundle,
    precious_dir,
    signals_of,
)
from tests.support.tasks import Started, start_shim
from tests.support.tree import snapshot

NS = "default"


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    opts = ",".join(("size=8m", *options))
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def is_mount_point(path: Path) -> bool:
    return os.path.ismount(path)


def every_command(node: Node, *ids: str, ns_flag: tuple[str, ...] = (), timeout: str = "1") -> None:
    """Run list, gc (plain, --kill-hung) and load --force (each reports the unsafe items and
    succeeds), then delete (plain, --force) of each unsafe bundle in `ids` (refused, exit 10)."""
    for args in (
        ("list", "--json"),
        ("gc", "--min-age", "0", "--json"),
        ("gc", "--min-age", "0", "--kill-hung", "--json"),
        ("load", "--force", "--json"),
    ):
        clean_exit(cli(node, "--timeout", timeout, *ns_flag, *args), 0)
    for task_id in ids:
        for force in ((), ("--force",)):
            clean_exit(cli(node, "--timeout", timeout, "delete", task_id, *force), ExitCode.UNSAFE)


# -- links out of root/state -----------------------------------------------------------------


def test_links_out_of_root_and_state_are_never_followed(
    node: Node, tmp_path: Path, socket_dir_exclusive: None
) -> None:
    precious = precious_dir(tmp_path)
    # work -> precious, rootfs -> precious, and the bundle dir itself -> precious.
    make_bundle(node, "worklink")
    (node.bundle("worklink") / "work").unlink()
    (node.bundle("worklink") / "work").symlink_to(precious)
    make_bundle(node, "rootlink")
    (node.bundle("rootlink") / "rootfs").rmdir()
    (node.bundle("rootlink") / "rootfs").symlink_to(precious)
    node.bundle("dirlink").symlink_to(precious)
    # A work dir entry in ROOT that is a link, and a namespace dir that is a link.
    (node.task_root / NS / "rootentry").symlink_to(precious)
    (node.task_state / "nslink").symlink_to(precious)
    (node.task_root / "nslink").symlink_to(precious)
    before = snapshot(precious)

    listed = cli(node, "list", "--json")
    clean_exit(listed, 0)
    found = findings(listed)
    for key in [(NS, "worklink"), (NS, "rootlink"), (NS, "dirlink"), ("nslink", "")]:
        assert found[key]["kind"] == "unsafe", found[key]
        assert found[key]["action"] == "report"
    every_command(node, "worklink", "rootlink", "dirlink")

    assert snapshot(precious) == before
    for task_id in ("worklink", "rootlink", "dirlink"):
        assert os.path.lexists(node.bundle(task_id)), task_id
    for task_id in ("worklink", "rootlink"):
        proc = cli(node, "delete", task_id)
        clean_exit(proc, ExitCode.UNSAFE)
        assert "unsafe" in proc.stderr or "symlink" in proc.stderr or "points" in proc.stderr


@pytest.mark.real
def test_delete_never_runs_the_shim_verb_through_a_rootfs_link(node: Node, tmp_path: Path) -> None:
    """The runc shim's `delete` verb unmounts <bundle>/rootfs following links: with rootfs
    linked to a mount point elsewhere, running the verb would unmount that. shimctl refuses the
    bundle before anything runs."""
    with tmpfs(tmp_path / "elsewhere") as mounted:
        (mounted / "data.txt").write_text("mounted data\n")
        bundle = make_bundle(node, "rootlink")
        (bundle / "rootfs").rmdir()
        (bundle / "rootfs").symlink_to(mounted)
        # A `runtime` file makes the runc shim's delete verb go on to unmount rootfs.
        (bundle / "runtime").write_text("runc")
        for args in (("delete", "rootlink"), ("delete", "rootlink", "--force")):
            clean_exit(cli(node, "--timeout", "1", *args), ExitCode.UNSAFE)
        for args in (("gc", "--min-age", "0"), ("load", "--force")):
            clean_exit(cli(node, "-n", NS, "--timeout", "1", *args), 0)
        assert is_mount_point(mounted)
        assert (mounted / "data.txt").read_text() == "mounted data\n"
        assert os.path.islink(bundle / "rootfs")


# -- names -----------------------------------------------------------------------------------


BAD_NAMES = ["Bad Name", "-dash", "a..b", "x" * 200, "tab\there", "ünï", "...", ".-x"]


def test_invalid_dot_and_long_names_are_reported_and_kept(
    node: Node, tmp_path: Path, socket_dir_exclusive: None
) -> None:
    for name in BAD_NAMES:
        (node.task_state / NS / name).mkdir(parents=True)
        (node.task_state / NS / name / "keep").write_text("x")
        (node.task_root / NS / f"{name}w").mkdir(parents=True)
        (node.task_state / name / "c1").mkdir(parents=True)
        (node.task_state / name / "c1" / "keep").write_text("x")
    raw = os.fsencode(node.task_state / NS) + b"/bad\xffbyte"
    os.mkdir(raw)
    before = snapshot(node.state, node.root)

    listed = cli(node, "list", "--json")
    clean_exit(listed, 0)
    kinds = {key: f["kind"] for key, f in findings(listed).items() if key[0] or key[1]}
    for name in BAD_NAMES:
        assert kinds.get((NS, name)) == "unsafe", (name, kinds)
        assert kinds.get((NS, f"{name}w")) == "unsafe", (name, kinds)
        # A hidden namespace dir is skipped, as containerd skips it.
        expected = None if name.startswith(".") else "unsafe"
        assert kinds.get((name, "")) == expected, (name, kinds)
    clean_exit(cli(node, "list"), 0)  # the text table copes with the names too
    for args in (("gc", "--min-age", "0"), ("load", "--force"), ("gc", "--min-age", "0", "-q")):
        clean_exit(cli(node, *args), 0)
    after = snapshot(node.state, node.root)
    after.pop(str(node.task_state / ".shimctl.node.lock"), None)
    assert after == before


@pytest.mark.parametrize(
    "args",
    [
        ("delete", "../../etc"),
        ("delete", ".."),
        ("delete", "x" * 300),
        ("delete", "a/b"),
        ("start", "../escape"),
        ("-n", "..", "list"),
        ("-n", "../..", "gc", "--min-age", "0"),
        ("-n", "a/b", "delete", "c1"),
        ("-n", "x" * 300, "start", "c1"),
    ],
)
def test_path_like_arguments_are_refused_before_touching_disk(
    node: Node, args: tuple[str, ...]
) -> None:
    before = snapshot(node.base)
    proc = cli(node, *args)
    clean_exit(proc, ExitCode.INVALID_ARGUMENT)
    assert snapshot(node.base) == before


# -- address files ---------------------------------------------------------------------------


def _address_cases(tmp_path: Path) -> dict[str, bytes | None]:
    regular = tmp_path / "precious" / "keep.txt"
    return {
        "empty": b"",
        "blank": b"  \n\n",
        "huge": b"unix:///run/containerd/s/" + b"a" * (3 * 1024 * 1024),
        "junk": bytes(range(256)) * 4,
        "utf8junk": "\ufffd\u202e\U0001f600 unix://x".encode(),
        "regular": f"unix://{regular}".encode(),
        "relative": b"unix://run/containerd/s/abc",
        "dir": f"unix://{tmp_path / 'precious'}".encode(),
        "abstract": f"shimctl-test-none-{os.getpid()}".encode(),
        "json-junk": b'{"version": 3, "address": 7}',
        "json-future": b'{"version": 99, "address": "unix:///x", "protocol": "ttrpc"}',
        "fifo": None,  # made below
        "link": None,
    }


def test_junk_address_files_never_block_and_nothing_outside_is_touched(
    node: Node, tmp_path: Path, socket_dir_exclusive: None
) -> None:
    precious = precious_dir(tmp_path)
    cases = _address_cases(tmp_path)
    for name, content in cases.items():
        make_bundle(node, name, address=content)
    os.mkfifo(node.bundle("fifo") / "address")
    (node.bundle("link") / "address").symlink_to(precious / "keep.txt")
    before = snapshot(precious)

    listed = cli(node, "--timeout", "1", "list", "--json", timeout=30)
    clean_exit(listed, 0)
    found = findings(listed)
    # Params of a shim generation shimctl does not know: reported, never deleted (issue 5).
    future = {"json-future"}
    for name in cases:
        # No shim process of theirs lives: garbage, cleaned by the delete verb or by hand.
        expected = ("unsafe",) if name in future else ("dead", "unknown-runtime")
        assert found[(NS, name)]["kind"] in expected, found[(NS, name)]
    gc = cli(node, "--timeout", "1", "gc", "--min-age", "0", "--json", timeout=30)
    clean_exit(gc, 0)
    for name in cases:
        assert os.path.lexists(node.bundle(name)) == (name in future), name
        assert os.path.lexists(node.workdir(name)) == (name in future), name
    assert snapshot(precious) == before
    again = cli(node, "--timeout", "1", "gc", "--min-age", "0", "--json")
    clean_exit(again, 0)


@pytest.mark.parametrize("kind", ["empty", "huge", "junk", "fifo", "regular"])
def test_delete_copes_with_a_junk_address(node: Node, tmp_path: Path, kind: str) -> None:
    precious = precious_dir(tmp_path)
    content = _address_cases(tmp_path)[kind]
    bundle = make_bundle(node, "c1", address=content)
    if kind == "fifo":
        os.mkfifo(bundle / "address")
    before = snapshot(precious)
    proc = cli(node, "--timeout", "1", "delete", "c1", "--json", timeout=30)
    clean_exit(proc, 0)
    assert not os.path.lexists(bundle)
    assert snapshot(precious) == before


def test_address_of_a_socket_that_is_not_a_shim(node: Node, tmp_path: Path) -> None:
    """A listener that is no shim (garbage, or silence) is not dead: gc reports it and leaves
    both it and the bundle alone."""
    sockdir = Path(os.path.realpath("/tmp")) / f"shimctl-notashim-{os.getpid()}-{id(node)}"
    sockdir.mkdir()
    try:
        with (
            FakeShim(str(sockdir / "g.sock"), "garbage") as garbage,
            FakeShim(str(sockdir / "s.sock"), "silent") as silent,
        ):
            make_bundle(node, "garbage", address=garbage.address, age=600)
            make_bundle(node, "silent", address=silent.address, age=600)
            gc = cli(node, "-n", NS, "--timeout", "1", "gc", "--min-age", "0", "--json")
            clean_exit(gc, 0)
            found = findings(gc)
            for name in ("garbage", "silent"):
                assert found[(NS, name)]["kind"] == "hung", found[(NS, name)]
                assert found[(NS, name)]["action"] == "report"
                assert node.bundle(name).is_dir()
            clean_exit(
                cli(node, "-n", NS, "--timeout", "1", "gc", "--min-age", "0", "--kill-hung"), 0
            )
            assert node.bundle("garbage").is_dir() and node.bundle("silent").is_dir()
            # delete: a protocol error is not "gone"; the bundle stays.
            clean_exit(cli(node, "--timeout", "1", "delete", "garbage"), ExitCode.PROTOCOL)
            assert node.bundle("garbage").is_dir()
            assert os.path.exists(sockdir / "g.sock") and os.path.exists(sockdir / "s.sock")
    finally:
        for leftover in sockdir.iterdir():
            leftover.unlink()
        sockdir.rmdir()


@pytest.mark.real
def test_address_of_another_namespaces_shim_never_stops_it(
    node: Node, started: Started, fakes: Fakes
) -> None:
    victim = start_shim(node, "victim", namespace="other")
    started.process(victim["shim_pid"])
    make_bundle(node, "thief", address=victim["address"])
    # The same through an abstract address: a fake shim of namespace "other".
    name = f"@shimctl-test-abstract-{os.getpid()}-{id(node)}"
    make_bundle(node, "thiefabs", address=name[1:])
    other = fakes.spawn("victim2", namespace="other", socket=name, cwd=node.base)

    listed = cli(node, "--timeout", "5", "list", "--json")
    clean_exit(listed, 0)
    found = findings(listed)
    for thief in ("thief", "thiefabs"):
        assert found[(NS, thief)]["kind"] == "unsafe", found[(NS, thief)]
        assert "not its own" in str(found[(NS, thief)]["reason"])
    every_command(node, "thief", "thiefabs", ns_flag=("-n", NS), timeout="5")
    for thief in ("thief", "thiefabs"):
        assert node.bundle(thief).is_dir()
        clean_exit(cli(node, "--timeout", "5", "delete", thief, "--force"), ExitCode.UNSAFE)
    assert pid_alive(victim["shim_pid"]) and other.alive()
    assert other.popen.poll() is None
    # The victim still answers in its own namespace and is deleted normally there.
    clean_exit(cli(node, "-n", "other", "delete", "victim"), 0)


# -- shim-binary-path ------------------------------------------------------------------------


def test_unusable_shim_binary_paths_are_never_run(
    node: Node, tmp_path: Path, socket_dir_exclusive: None
) -> None:
    marker = tmp_path / "ran"
    evil = f'#!/bin/sh\necho "$0 $*" >> {marker}\n'
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    notexec = tmp_path / "notexec.sh"
    notexec.write_text(evil)
    notexec.chmod(0o644)
    cases: dict[str, bytes] = {
        "missing": b"/nonexistent/containerd-shim-runc-v2",
        "notexec": str(notexec).encode(),
        "relative": b"./evil.sh",
        "relnested": b"bin/evil.sh",
        "bare": b"evil.sh",
        "directory": str(tmp_path).encode(),
        "empty": b"",
        "junk": b"\x00\xff/bin/sh\n\x01",
        "huge": b"/" + b"a" * (2 * 1024 * 1024),
    }
    for name, content in cases.items():
        bundle = make_bundle(node, name, runtime=content)
        (bundle / "bin").mkdir()
        (cwd / "bin").mkdir(exist_ok=True)
        for where in (bundle, bundle / "bin", cwd, cwd / "bin"):
            (where / "evil.sh").write_text(evil)
            (where / "evil.sh").chmod(0o755)
    before = snapshot(notexec)

    listed = cli(node, "list", "--json", cwd=cwd)
    clean_exit(listed, 0)
    found = findings(listed)
    for name in cases:
        assert found[(NS, name)]["kind"] == "unknown-runtime", found[(NS, name)]
    clean_exit(cli(node, "delete", "relative", cwd=cwd), 0)
    clean_exit(cli(node, "delete", "relnested", cwd=cwd), 0)
    clean_exit(cli(node, "gc", "--min-age", "0", cwd=cwd), 0)
    for name in cases:
        assert not os.path.lexists(node.bundle(name)), name
    assert not marker.exists(), marker.read_text()
    assert snapshot(notexec) == before


# -- PID reuse and look-alikes ---------------------------------------------------------------


def test_look_alikes_and_pid_files_are_never_signalled(
    node: Node, tmp_path: Path, fakes: Fakes
) -> None:
    """Bundles whose shim is gone, with pid files naming look-alike processes (a shim's argv
    and even the bundle as cwd, but another namespace or another containerd address), and a
    shim whose Connect names a look-alike as its pid. No look-alike ever gets a signal."""
    log = tmp_path / "signals"
    log.mkdir()
    for task_id in ("otherns", "otheraddr"):
        make_bundle(node, task_id, address=f"unix://{derived_socket(node, task_id)}", age=600)
    lookalikes = {
        "otherns": fakes.spawn(
            "otherns", namespace="other", cwd=node.bundle("otherns"), sleep=True, marker_dir=log
        ),
        "otheraddr": fakes.spawn(
            "otheraddr", address=str(tmp_path / "other.sock"), sleep=True, marker_dir=log
        ),
    }
    for task_id, proc in lookalikes.items():
        for pidfile in ("shim.pid", "init.pid"):
            (node.bundle(task_id) / pidfile).write_text(str(proc.pid))
    make_bundle(node, "liar", address=f"unix://{derived_socket(node, 'liar')}", age=600)
    fakes.spawn("liar", pid=lookalikes["otherns"].pid)

    listed = cli(node, "--timeout", "2", "list", "--json")
    clean_exit(listed, 0)
    found = findings(listed)
    assert found[(NS, "otherns")]["kind"] == "dead"
    assert found[(NS, "otheraddr")]["kind"] == "dead"
    assert found[(NS, "liar")]["kind"] == "unsafe"
    for args in (
        ("delete", "liar", "--force"),
        ("delete", "otherns", "--force"),
        ("gc", "--min-age", "0", "--kill-hung"),
        ("load", "--force"),
    ):
        clean_exit(cli(node, "-n", NS, "--timeout", "2", *args), 0, ExitCode.UNSAFE)
    for task_id, proc in lookalikes.items():
        assert proc.alive(), task_id
        assert signals_of(log, task_id) == [], task_id
    assert not os.path.lexists(node.bundle("otherns"))
    assert not os.path.lexists(node.bundle("otheraddr"))
    assert node.bundle("liar").is_dir()


def test_a_pid_named_by_a_lying_shim_is_never_signalled(
    node: Node, tmp_path: Path, fakes: Fakes
) -> None:
    """Shims whose Connect names the pid of another bundle's running shim (which passes the
    namespace check: its cwd is a bundle of the namespace), then hang in Pids (found by their
    own argv, or not: another containerd address) or exit in Shutdown. Neither --kill-hung,
    --force nor the kill of a shim lingering after Shutdown may reach the named shim."""
    # A short shutdown timeout: shimctl waits that long for a named pid that does not exit.
    (node.base / "no-config.toml").write_text(
        '[timeouts]\n"io.containerd.timeout.shim.shutdown" = "1s"\n'
    )
    make_bundle(node, "victim")
    victim = fakes.spawn("victim", task_pid=4242)
    make_bundle(node, "liarhung")
    fakes.spawn("liarhung", pid=victim.pid, faults={"Pids": "silent"})
    make_bundle(node, "liarhidden")
    fakes.spawn(
        "liarhidden",
        address=str(tmp_path / "elsewhere.sock"),
        socket=str(derived_socket(node, "liarhidden")),
        pid=victim.pid,
        faults={"Pids": "silent"},
    )
    make_bundle(node, "liarshut")
    fakes.spawn("liarshut", pid=victim.pid)
    for task_id in ("victim", "liarhung", "liarhidden", "liarshut"):
        (node.bundle(task_id) / "address").write_text(f"unix://{derived_socket(node, task_id)}")
        backdate(node.bundle(task_id), 600)

    listed = cli(node, "--timeout", "2", "list", "--json")
    clean_exit(listed, 0)
    found = findings(listed)
    assert found[(NS, "victim")]["kind"] == "running"
    assert found[(NS, "liarhidden")]["kind"] == "hung"
    for args in (
        ("gc", "--min-age", "0", "--kill-hung"),
        ("load", "--force"),
        ("delete", "liarhung", "--force"),
        ("delete", "liarhidden", "--force"),
        ("delete", "liarshut"),
    ):
        clean_exit(
            cli(node, "-n", NS, "--timeout", "2", *args),
            0,
            ExitCode.NOT_FOUND,
            ExitCode.FAILED_PRECONDITION,
            ExitCode.ACTIONS_FAILED,
        )
    assert victim.alive()
    assert found[(NS, "victim")]["shim_pid"] == victim.pid


# -- unreadable things -----------------------------------------------------------------------

NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")


def test_unreadable_dirs_and_files_without_dac_override(node: Node) -> None:
    """As root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, mode-000 items cannot be read:
    they are reported and never deleted (nor renamed) unseen; the run goes on with the rest."""
    make_bundle(node, "unreadable", age=600)
    (node.bundle("unreadable") / "keep").write_text("x")
    make_bundle(node, "noaddr", address=b"unix:///nowhere", age=600)
    (node.bundle("noaddr") / "address").chmod(0)
    make_bundle(node, "dead", address=b"unix:///nowhere", age=600)
    locked_ns = node.task_state / "lockedns"
    (locked_ns / "c1").mkdir(parents=True)
    (locked_ns / "c1" / "keep").write_text("x")
    locked = [node.bundle("unreadable"), locked_ns]
    try:
        for path in locked:
            path.chmod(0)
        listed = cli(node, "list", "--json", prefix=NO_DAC)
        clean_exit(listed, 0)
        found = findings(listed)
        assert found[(NS, "unreadable")]["action"] == "report", found[(NS, "unreadable")]
        assert "unreadable" in str(found[(NS, "unreadable")]["reason"])
        assert found[("lockedns", "")]["action"] == "report", found[("lockedns", "")]
        assert found[(NS, "dead")]["kind"] == "dead"
        for args in (("gc", "-q", "--min-age", "0"), ("load", "--force")):
            clean_exit(cli(node, *args, prefix=NO_DAC), 0)
        assert not os.path.lexists(node.bundle("dead"))
        clean_exit(
            cli(node, "delete", "unreadable", prefix=NO_DAC), ExitCode.INVALID_ARGUMENT
        )  # "cannot read ..."
        assert sorted(os.listdir(node.task_state / NS)) == ["unreadable"]
    finally:
        node.bundle("unreadable").chmod(0o700)
        locked_ns.chmod(0o711)
    assert (node.bundle("unreadable") / "keep").read_text() == "x"
    assert (locked_ns / "c1" / "keep").read_text() == "x"


# -- a read-only state dir -------------------------------------------------------------------


def test_read_only_state_dir_gives_clear_errors_and_changes_nothing(
    node: Node, tmp_path: Path
) -> None:
    with tmpfs(node.state):
        make_bundle(node, "dead", address=b"unix:///nowhere", age=600)
        make_bundle(node, "nobin", runtime=None, age=600)
        (node.task_state / NS / "emptyb").mkdir()
        (node.task_root / NS / "orphanw").mkdir()
        backdate(node.task_state / NS, 600)
        subprocess.run(["mount", "-o", "remount,ro", str(node.state)], check=True)
        before = snapshot(node.state, node.root)

        listed = cli(node, "list", "--json")
        clean_exit(listed, 0)
        assert findings(listed)[(NS, "dead")]["kind"] == "dead"
        clean_exit(cli(node, "gc", "--min-age", "0", "--dry-run"), 0)
        for args, code in (
            (("gc", "--min-age", "0"), 5),
            (("load", "--force"), 5),
            (("delete", "dead"), 5),
            (("delete", "dead", "--force"), 5),
            (("start", "c1"), 5),
        ):
            proc = cli(node, *args)
            clean_exit(proc, code)
            assert "Read-only file system" in proc.stderr, proc.stderr
        assert snapshot(node.state, node.root) == before


# -- signals to a whole process group only when it is the shim's own -------------------------


def test_force_kills_the_shims_own_group_but_never_a_shared_one(
    node: Node, fakes: Fakes, tmp_path: Path
) -> None:
    make_bundle(node, "own")
    own = fakes.spawn("own", faults={"*": "silent"}, child=True)
    make_bundle(node, "shared")
    # The fake shares the process group of a wrapper (the group leader), as a process that was
    # not started setpgid would: a group signal would reach the wrapper and its other children.
    wrapper = subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL, process_group=0)
    fakes.track(wrapper.pid)
    try:
        shared = fakes.spawn("shared", faults={"*": "silent"}, child=True, group=wrapper.pid)
        assert os.getpgid(shared.pid) == os.getpgid(shared.child) == wrapper.pid

        clean_exit(cli(node, "--timeout", "1", "delete", "own", "--force"), 0)
        clean_exit(cli(node, "--timeout", "1", "delete", "shared", "--force"), 0)

        assert wait_gone(own.pid, own.create_time) and wait_gone(own.child, None)
        assert wait_gone(shared.pid, shared.create_time)
        assert pid_alive(shared.child) and wrapper.poll() is None
        assert not os.path.lexists(node.bundle("own"))
        assert not os.path.lexists(node.bundle("shared"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(wrapper.pid, signal.SIGKILL)
        wrapper.wait(timeout=10)
