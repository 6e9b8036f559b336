"""`shimctl logs`: a real shim started with --debug, its log fifo read as containerd does."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from shimctl.errors import ExitCode
from tests.support.helpers import Node, run_cli
from tests.support.tasks import Started, create_task, spec_file, stop_task


@contextlib.contextmanager
def refusing_event_receiver(path: str) -> Iterator[None]:
    """A listener at the ttrpc address that closes every connection: the shim's event
    publisher fails at once and logs `post event` errors (with no listener it waits ~5 s)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    srv.settimeout(0.1)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        srv.close()
        os.unlink(path)


def shimctl(node: Node, *args: str) -> list[str]:
    return [sys.executable, "-m", "shimctl", *node.cli_args(), *args]


def start_debug(node: Node, started: Started, task_id: str) -> None:
    env = {**node.env(), "SHIMCTL_DEBUG": "1"}
    proc = subprocess.run(
        shimctl(node, "start", task_id, "--json", "--spec", str(spec_file(node))),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    started.process(json.loads(proc.stdout)["result"]["shim_pid"])
    # --debug copies the shim's start-up log to stderr, never to stdout. (The shim may open its
    # end of the fifo only after start returned: then its first lines wait for the next reader.)
    assert "level=" not in proc.stdout


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
    return buf


@pytest.mark.real
def test_logs_follow_copies_the_shim_log(node: Node, started: Started) -> None:
    with refusing_event_receiver(node.ttrpc_address):
        start_debug(node, started, "lg1")
        logs = subprocess.Popen(
            shimctl(node, "logs", "lg1", "--follow"),
            env=node.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            time.sleep(0.3)  # the fifo is open before the shim has anything to say
            started.container("lg1")
            create_task(node, "lg1")  # publishes /tasks/create, /tasks/start: refused, logged
            out = read_until(logs, b'msg="post event"', timeout=15)
            assert b"level=error" in out and b'msg="post event"' in out, out
            assert stop_task(node, "lg1") == 137
            proc = run_cli(node, "delete", "lg1")
            assert proc.returncode == 0, proc.stderr
            # The bundle is gone: --follow ends by itself.
            assert logs.wait(timeout=10) == 0
            assert logs.stderr is not None and logs.stderr.read() == b""
        finally:
            if logs.poll() is None:
                os.kill(logs.pid, signal.SIGKILL)
                logs.wait()


@pytest.mark.real
def test_logs_without_follow_stops_when_idle(node: Node, started: Started) -> None:
    start_debug(node, started, "lg2")
    t0 = time.monotonic()
    proc = run_cli(node, "logs", "lg2", "--idle", "0.3")
    assert proc.returncode == 0, proc.stderr
    # Nothing new arrives, so it ends after the idle time (having shown at most the start-up
    # lines of a shim that opened its end of the fifo late).
    assert all("level=" in line for line in proc.stdout.splitlines())
    assert time.monotonic() - t0 < 10
    proc = run_cli(node, "delete", "lg2")
    assert proc.returncode == 0, proc.stderr


def test_logs_interrupted_exits_130_without_traceback(node: Node) -> None:
    (node.bundle("lg3")).mkdir(parents=True)
    logs = subprocess.Popen(
        shimctl(node, "logs", "lg3", "--follow"),
        env=node.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while not (node.bundle("lg3") / "log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (node.bundle("lg3") / "log").exists()  # created as the manager does
        logs.send_signal(signal.SIGINT)
        assert logs.wait(timeout=10) == 130
        assert logs.stderr is not None
        assert logs.stderr.read().decode() == "shimctl: interrupted\n"
    finally:
        if logs.poll() is None:
            os.kill(logs.pid, signal.SIGKILL)
            logs.wait()


def test_logs_of_unknown_task(node: Node) -> None:
    proc = run_cli(node, "logs", "nope")
    assert proc.returncode == ExitCode.NOT_FOUND
    assert "no bundle for task 'nope'" in proc.stderr
    assert run_cli(node, "logs", "../x").returncode == ExitCode.INVALID_ARGUMENT
