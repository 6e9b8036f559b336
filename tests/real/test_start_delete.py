"""`shimctl start` and `shimctl delete` end to end against the real containerd-shim-runc-v2."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import signal
import stat
import uuid
from pathlib import Path

import psutil
import pytest

from shimctl.errors import ExitCode
from shimctl.node import sockets
from shimctl.settings import SHIM_SOCKET_DIR
from shimctl.shim.task import TaskClient
from tests.support.helpers import Node, pid_alive, run_cli, shim_socket_path, wait_gone
from tests.support.tasks import Started, client, create_task, spec_file, start_shim, stop_task

pytestmark = pytest.mark.real

SHIM = "/usr/bin/containerd-shim-runc-v2"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def shim_pid_of(node: Node, task_id: str) -> int:
    address = (node.bundle(task_id) / "address").read_text()
    with TaskClient.connect(address, node.namespace, timeout=5) as c:
        return c.connect_info(task_id).shim_pid


def test_start_creates_the_bundle_and_a_live_shim(node: Node) -> None:
    result = start_shim(node, "c1")
    bundle = node.bundle("c1")
    work = node.workdir("c1")
    socket = shim_socket_path(node.address, "default", "c1")

    assert result["bundle"] == str(bundle)
    assert result["address"] == f"unix://{socket}"
    assert result["runtime"] == SHIM
    # Layout and modes exactly as containerd's manager leaves them (layout.md §2).
    assert mode(node.task_state) == 0o711 and mode(node.task_root) == 0o711
    assert mode(bundle) == 0o700
    assert mode(bundle / "config.json") == 0o644
    assert json.loads((bundle / "config.json").read_text())["root"]["path"] == "rootfs"
    assert mode(bundle / "rootfs") == 0o711
    assert os.readlink(bundle / "work") == str(work)
    assert mode(work) == 0o711
    assert stat.S_ISFIFO(os.lstat(bundle / "log").st_mode) and mode(bundle / "log") == 0o700
    assert (bundle / "address").read_bytes() == f"unix://{socket}".encode()
    assert mode(bundle / "address") == 0o644
    assert (bundle / "shim-binary-path").read_bytes() == SHIM.encode()
    assert mode(bundle / "shim-binary-path") == 0o600
    assert not (bundle / ".address").exists()

    # The shim server: alive, started with the manager's flags, answering on the socket.
    proc = psutil.Process(result["shim_pid"])
    argv = proc.cmdline()
    assert argv[argv.index("-id") + 1] == "c1"
    assert argv[argv.index("-namespace") + 1] == "default"
    assert argv[argv.index("-address") + 1] == node.address
    assert proc.cwd() == str(bundle)
    assert stat.S_ISSOCK(os.lstat(socket).st_mode)
    assert shim_pid_of(node, "c1") == result["shim_pid"]

    run_cli(node, "delete", "c1")


def test_the_proc_scan_sees_a_shim_as_psutil_does(node: Node) -> None:
    """processes.find_shims reads /proc itself; its (pid, start time), argv and cwd must equal
    psutil's, since later checks compare them with psutil's (a mismatch would make shimctl
    refuse to act on its own shims)."""
    from shimctl.node import processes

    pid = start_shim(node, "scan1")["shim_pid"]
    (found,) = [s for s in processes.find_shims(node.address) if s.ref.pid == pid]
    proc = psutil.Process(pid)
    assert found.ref == processes.ProcessRef(pid, proc.create_time())
    assert processes.is_alive(found.ref) and processes.still_alive(found.ref)
    assert list(found.argv) == proc.cmdline()
    assert (found.namespace, found.id, found.address) == ("default", "scan1", node.address)
    assert found.cwd == proc.cwd() == str(node.bundle("scan1"))
    run_cli(node, "delete", "scan1")
    assert wait_gone(pid, proc.create_time())
    assert not processes.still_alive(found.ref)
    assert pid not in [s.ref.pid for s in processes.find_shims(node.address)]


def test_delete_stops_the_shim_and_removes_everything(node: Node) -> None:
    result = start_shim(node, "c1")
    pid = result["shim_pid"]
    created = psutil.Process(pid).create_time()
    socket = shim_socket_path(node.address, "default", "c1")

    proc = run_cli(node, "delete", "c1", "--json")

    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["result"]
    assert out["method"] == "task-api" and out["shim_stopped"] is True
    assert wait_gone(pid, created, timeout=10)
    assert not node.bundle("c1").exists()
    assert not node.workdir("c1").exists()
    assert not os.path.lexists(socket)
    assert os.listdir(node.task_state / "default") == [".shimctl.node.lock"] or not os.listdir(
        node.task_state / "default"
    )


def test_delete_of_a_real_task_reports_its_exit(node: Node) -> None:
    start_shim(node, "t1", "--spec", str(spec_file(node)))
    task_pid = create_task(node, "t1")
    assert pid_alive(task_pid)

    refused = run_cli(node, "delete", "t1")
    assert refused.returncode == ExitCode.FAILED_PRECONDITION, refused.stderr
    assert "t1" in refused.stderr and "hint:" in refused.stderr
    assert pid_alive(task_pid) and node.bundle("t1").exists()

    assert stop_task(node, "t1") == 137
    proc = run_cli(node, "delete", "t1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["result"]
    assert out["exit_status"] == 137 and out["pid"] == task_pid and out["exited_at"]
    assert not node.bundle("t1").exists() and not node.workdir("t1").exists()


def test_sandbox_join_shares_the_shim(node: Node) -> None:
    sandbox = start_shim(node, "sb")
    member = start_shim(node, "m1", "--sandbox", "sb")
    bundle = node.bundle("m1")

    assert member["address"] == sandbox["address"]
    assert member["shim_pid"] == sandbox["shim_pid"]
    assert (bundle / "sandbox").read_bytes() == b"sb" and mode(bundle / "sandbox") == 0o600
    assert (bundle / "address").read_bytes() == sandbox["address"].encode()
    assert not (bundle / "shim-binary-path").exists()
    assert stat.S_ISFIFO(os.lstat(bundle / "log").st_mode)

    # A sandboxed delete leaves the sandbox's shim running.
    proc = run_cli(node, "delete", "m1")
    assert proc.returncode == 0, proc.stderr
    assert not bundle.exists()
    assert pid_alive(sandbox["shim_pid"])
    assert shim_pid_of(node, "sb") == sandbox["shim_pid"]

    assert run_cli(node, "delete", "sb").returncode == 0
    assert wait_gone(sandbox["shim_pid"], None, timeout=10)


def test_missing_sandbox_is_an_error_and_creates_nothing(node: Node) -> None:
    proc = run_cli(node, "start", "m1", "--sandbox", "nope")
    assert proc.returncode == ExitCode.NOT_FOUND
    assert "nope" in proc.stderr
    assert not node.bundle("m1").exists() and not node.workdir("m1").exists()


def test_delete_of_a_killed_shim_uses_the_binary(node: Node, socket_dir_shared: None) -> None:
    start_shim(node, "k1", "--spec", str(spec_file(node)))
    task_pid = create_task(node, "k1")
    shim_pid = shim_pid_of(node, "k1")
    socket = shim_socket_path(node.address, "default", "k1")
    os.kill(shim_pid, signal.SIGKILL)
    assert wait_gone(shim_pid, None, timeout=10)
    assert os.path.lexists(socket)  # a killed shim leaves its socket

    proc = run_cli(node, "delete", "k1", "--json")

    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["result"]
    assert out["method"] == "shim-binary"
    assert out["exit_status"] == 137 and out["pid"] == task_pid
    assert wait_gone(task_pid, None, timeout=10)  # runc delete --force killed the container
    assert not node.bundle("k1").exists() and not node.workdir("k1").exists()
    assert not os.path.lexists(socket)


def test_delete_of_a_killed_never_created_shim_still_removes_the_bundle(node: Node) -> None:
    result = start_shim(node, "k2")
    os.kill(result["shim_pid"], signal.SIGKILL)
    assert wait_gone(result["shim_pid"], None, timeout=10)

    proc = run_cli(node, "delete", "k2", "--json")

    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)["result"]
    assert out["method"] == "shim-binary" and out["exit_status"] is None
    assert any("runtime" in note for note in out["notes"])  # the verb failed: no runtime file
    assert not node.bundle("k2").exists()
    assert not os.path.lexists(shim_socket_path(node.address, "default", "k2"))


def test_delete_missing_id_is_not_found(node: Node) -> None:
    proc = run_cli(node, "delete", "ghost")
    assert proc.returncode == ExitCode.NOT_FOUND
    assert "ghost" in proc.stderr and proc.stderr.startswith("shimctl: error:")


def test_start_twice_is_already_exists_and_keeps_the_first(node: Node) -> None:
    first = start_shim(node, "c1")
    proc = run_cli(node, "start", "c1")
    assert proc.returncode == ExitCode.ALREADY_EXISTS
    assert "already exists" in proc.stderr
    assert shim_pid_of(node, "c1") == first["shim_pid"]
    assert run_cli(node, "delete", "c1").returncode == 0


def _nothing_created(node: Node) -> bool:
    bundles = list(node.task_state.glob("*/*")) if node.task_state.exists() else []
    work = list(node.task_root.glob("*/*")) if node.task_root.exists() else []
    return not bundles and not work


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["start", "../evil"], ExitCode.INVALID_ARGUMENT, "invalid task id"),
        (["start", "a..b"], ExitCode.INVALID_ARGUMENT, "must match"),
        (["start", "x" * 77], ExitCode.INVALID_ARGUMENT, "maximum length"),
        (["start", "ok\n"], ExitCode.INVALID_ARGUMENT, "must match"),
        (["-n", "bad/ns", "start", "c1"], ExitCode.INVALID_ARGUMENT, "namespace"),
        (
            ["start", "c1", "--runtime", "io.containerd.nope.v9"],
            ExitCode.NOT_FOUND,
            "containerd-shim-nope-v9",
        ),
        (["start", "c1", "--runtime", "v2"], ExitCode.INVALID_ARGUMENT, "invalid runtime name"),
        (
            ["start", "c1", "--runtime", "foo/io.containerd.runc.v2"],
            ExitCode.INVALID_ARGUMENT,
            "invalid runtime name",
        ),
        (
            ["start", "c1", "--runtime", "/nonexistent/shim"],
            ExitCode.NOT_FOUND,
            "/nonexistent/shim",
        ),
        (
            ["start", "c1", "--spec", "/nonexistent/spec.json"],
            ExitCode.INVALID_ARGUMENT,
            "/nonexistent/spec.json",
        ),
        (
            ["start", "c1", "--options", "/nonexistent/opts"],
            ExitCode.INVALID_ARGUMENT,
            "/nonexistent/opts",
        ),
        (["delete", "../evil"], ExitCode.INVALID_ARGUMENT, "invalid task id"),
    ],
)
def test_bad_input_is_a_clear_error_and_creates_nothing(
    node: Node, args: list[str], code: ExitCode, needle: str
) -> None:
    proc = run_cli(node, *args)
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _nothing_created(node)


def test_bad_spec_and_options_contents(node: Node) -> None:
    bad_spec = node.base / "bad.json"
    bad_spec.write_text("{not json")
    proc = run_cli(node, "start", "c1", "--spec", str(bad_spec))
    assert proc.returncode == ExitCode.INVALID_ARGUMENT and "not valid JSON" in proc.stderr
    bad_opts = node.base / "opts.bin"
    bad_opts.write_bytes(b"\xff\xff\xff")
    proc = run_cli(node, "start", "c1", "--options", str(bad_opts))
    assert proc.returncode == ExitCode.INVALID_ARGUMENT and "opts.bin" in proc.stderr
    assert _nothing_created(node)


def test_a_failing_start_verb_leaves_nothing(node: Node) -> None:
    # A shim binary whose `start` fails (the real one fails like this on bad options).
    failing = node.base / "containerd-shim-fail-v2"
    failing.write_text("#!/bin/sh\necho 'io.containerd.fail.v2: boom' >&2\nexit 1\n")
    failing.chmod(0o755)
    proc = run_cli(node, "start", "c1", "--runtime", str(failing))
    assert proc.returncode == ExitCode.UNKNOWN
    assert "boom" in proc.stderr and "exit status 1" in proc.stderr
    assert _nothing_created(node)


def test_a_shim_that_never_answers_is_stopped_and_removed(node: Node) -> None:
    # The real shim, but with no fifo reader it would hang; here a start verb prints an
    # address nobody serves: the Connect check fails and start undoes everything.
    bogus = node.base / "containerd-shim-bogus-v2"
    bogus.write_text("#!/bin/sh\nprintf unix:///run/containerd/s/nonexistent-shimctl-test\n")
    bogus.chmod(0o755)
    proc = run_cli(node, "start", "c1", "--runtime", str(bogus), "--timeout", "1")
    assert proc.returncode == ExitCode.UNAVAILABLE, proc.stderr
    assert _nothing_created(node)


def test_options_reach_the_shim(node: Node) -> None:
    from shimctl.shim.task import runc_options_any

    opts = node.base / "opts.bin"
    opts.write_bytes(runc_options_any(root=str(node.runc_root)))
    start_shim(node, "o1", "--spec", str(spec_file(node)), "--options", str(opts))
    create_task(node, "o1")
    # The shim persisted the Create options; runc state went to the private root.
    assert (node.runc_root / "default" / "o1").exists()
    stop_task(node, "o1")
    assert run_cli(node, "delete", "o1").returncode == 0


def test_derived_address_equals_the_real_shims_for_a_double_slash_address(
    node: Node, started: Started
) -> None:
    """containerd's address `//x` (POSIX keeps the `//`, Go's Clean does not): the socket the
    real shim names for itself is the one shimctl derives when a bundle has no address."""
    address = "/" + node.address
    assert address.startswith("//")
    proc = run_cli(node, "--address", address, "start", "dbl", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["result"]
    started.process(result["shim_pid"])
    argv = psutil.Process(result["shim_pid"]).cmdline()
    assert argv[argv.index("-address") + 1] == address

    derived = sockets.derive_address(address, "default", "dbl", SHIM_SOCKET_DIR)
    assert result["address"] == derived
    posix = hashlib.sha256(posixpath.normpath(f"{address}/default/dbl").encode()).hexdigest()
    assert derived != f"unix://{SHIM_SOCKET_DIR}/{posix}"  # the case tells the two apart
    assert stat.S_ISSOCK(os.lstat(derived.removeprefix("unix://")).st_mode)

    deleted = run_cli(node, "--address", address, "delete", "dbl")
    assert deleted.returncode == 0, deleted.stderr
    assert wait_gone(result["shim_pid"], None, timeout=10)


def _remove_cgroups(namespace: str) -> None:
    """runc removes a task's own cgroup; the namespace level above it is left, as by ctr."""
    for ns_dir in Path("/sys/fs/cgroup").glob(f"*/{namespace}"):
        for task_dir in [d for d in ns_dir.iterdir() if d.is_dir()]:
            with contextlib.suppress(OSError):
                task_dir.rmdir()
        with contextlib.suppress(OSError):
            ns_dir.rmdir()


def test_default_spec_gives_same_id_tasks_in_two_namespaces_their_own_cgroups(
    node: Node, started: Started
) -> None:
    """Two tasks `c1` in two namespaces, both from start's default spec: each cgroup is
    /<namespace>/<id>, and each task's pids are its own (with one shared `/c1` cgroup the
    other namespace's process was listed, and a Kill(all) would signal it)."""
    tag = uuid.uuid4().hex[:8]
    namespaces = [f"cga-{tag}", f"cgb-{tag}"]
    pids: dict[str, int] = {}
    try:
        for ns in namespaces:
            started.process(start_shim(node, "c1", namespace=ns)["shim_pid"])
            config = node.bundle("c1", ns) / "config.json"
            spec = json.loads(config.read_bytes())
            assert spec["linux"]["cgroupsPath"] == f"/{ns}/c1"
            # Only the process changes: the default /bin/sh would exit at once (no stdin).
            spec["process"]["args"] = ["/bin/sleep", "600"]
            config.write_text(json.dumps(spec))
            started.container("c1", ns)
            pids[ns] = started.process(create_task(node, "c1", namespace=ns))
        for ns in namespaces:
            with client(node, "c1", ns) as task:
                assert task.pids("c1") == [pids[ns]]
            lines = Path(f"/proc/{pids[ns]}/cgroup").read_text().splitlines()
            assert any(line.endswith(f":/{ns}/c1") for line in lines), lines
        for ns in namespaces:
            assert stop_task(node, "c1", ns) == 137
            deleted = run_cli(node, "-n", ns, "delete", "c1")
            assert deleted.returncode == 0, deleted.stderr
            assert not node.bundle("c1", ns).exists()
    finally:
        started.stop_all()
        for ns in namespaces:
            _remove_cgroups(ns)
    for ns in namespaces:
        assert list(Path("/sys/fs/cgroup").glob(f"*/{ns}")) == []
