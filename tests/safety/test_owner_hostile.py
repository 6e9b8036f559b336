"""Hostile evidence of ownership, end to end through the CLI: a fake containerd at --address
that hangs, refuses or answers garbage frames, and a meta.db that is truncated, random, huge
(sparse), a symlink out of root, or locked exclusively by another process. Every time: the
owner is unknown (``result.owner.source == "unknown"``, each bundle's owner ``unknown``), the
decisions are exactly those of a run with no records at all, stderr has no traceback, the run
exits 0 and finishes (bounded; no timing assertion), and nothing is touched even with
``--stop-orphaned --delete-created``.

The bundles are real: a running and a stopped runc task under real shims that `shimctl start`
started, their shimctl mark removed so they look like containerd's own. The meta.db is a real
containerd 1.6's, holding a record for the stopped task only; read as it is (the control), it
changes the decisions (the running task becomes an orphan), so each hostile case is able to
fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from shimctl.node.bundle import SHIMCTL_STARTED
from tests.support import findings
from tests.support.containerd import running_containerd
from tests.support.generations import generation
from tests.support.helpers import Node, pid_alive, teardown_node, wait_gone
from tests.support.owner_states import Api
from tests.support.safetykit import REPO, cli
from tests.support.tasks import Started, create_task, spec_file, start_shim, stop_task

pytestmark = pytest.mark.real

NS = "default"
METADATA = "io.containerd.metadata.v1.bolt"
#: Seeded, so that a failing garbage case can be run again byte for byte.
SEED = 13
#: A bound on every run (a hang fails the test through subprocess's timeout).
RUN_BOUND = 60.0

Decisions = dict[str, tuple[str, str, str | None]]


@dataclass
class Scene:
    node: Node
    running: str
    stopped: str
    shims: dict[str, tuple[int, float]]  # id -> shim (pid, create time)
    metadb: bytes  # the real containerd 1.6 meta.db, as it stopped

    @property
    def metadb_dir(self) -> Path:
        return self.node.root / METADATA

    @property
    def metadb_path(self) -> Path:
        return self.metadb_dir / "meta.db"

    def reset(self) -> None:
        """No records at all: nothing at the address, no meta.db."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.node.address)
        if self.metadb_dir.is_symlink() or self.metadb_dir.is_file():
            os.unlink(self.metadb_dir)
        elif self.metadb_dir.exists():
            shutil.rmtree(self.metadb_dir)

    def put_metadb(self, data: bytes | None = None) -> Path:
        self.metadb_dir.mkdir(exist_ok=True)
        self.metadb_path.write_bytes(self.metadb if data is None else data)
        return self.metadb_path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    gen = generation("system")
    gen.require()
    node = Node.under(tmp_path_factory.mktemp("ownerhostile"))
    started = Started(node)
    try:
        running, stopped = "hostile-run", "hostile-stopped"
        with running_containerd(node, **gen.containerd_options()) as cd:
            cd.ctr("container", "create", "--rootfs", str(cd.rootfs), stopped, "/bin/true")
            cd.stop()
            # The fixture's cleanup starts it again and removes the record: the copy keeps it.
            metadb = (node.root / METADATA / "meta.db").read_bytes()
        shims: dict[str, tuple[int, float]] = {}
        for task_id in (running, stopped):
            result = start_shim(node, task_id, "--spec", str(spec_file(node)))
            started.process(result["shim_pid"])
            started.container(task_id)
            shims[task_id] = (result["shim_pid"], psutil.Process(result["shim_pid"]).create_time())
            create_task(node, task_id)
            (node.bundle(task_id) / SHIMCTL_STARTED).unlink()  # as containerd's own bundle
        assert stop_task(node, stopped) == 137
        scene = Scene(node, running, stopped, shims, metadb)
        scene.reset()
        yield scene
    finally:
        started.stop_all()
        teardown_node(node)


# -- runs -------------------------------------------------------------------------------------


def _run(scene: Scene, *args: str) -> dict[str, Any]:
    proc = cli(scene.node, "--timeout", "1", "--json", *args, timeout=RUN_BOUND)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = findings.document(proc)["result"]
    return result


def _decisions(scene: Scene, result: dict[str, Any]) -> Decisions:
    found = findings.by_id(result, namespace=NS)
    return {
        i: (f["kind"], f["action"], f["owner"])
        for i, f in found.items()
        if i in (scene.running, scene.stopped)
    }


def _runs(scene: Scene) -> dict[str, tuple[str, Decisions]]:
    """list, gc --dry-run and gc with every opt-in: (owner source, decisions) of each."""
    out: dict[str, tuple[str, Decisions]] = {}
    for name, args in (
        ("list", ("list",)),
        ("gc --dry-run", ("gc", "--min-age", "0", "--dry-run")),
        ("gc", ("gc", "--min-age", "0", "--stop-orphaned", "--delete-created")),
    ):
        result = _run(scene, *args)
        assert result["owner"] is not None, result
        out[name] = (result["owner"]["source"], _decisions(scene, result))
    return out


def _untouched(scene: Scene) -> None:
    for task_id, (pid, created) in scene.shims.items():
        assert pid_alive(pid, created), f"{task_id}: shim {pid} gone"
        assert scene.node.bundle(task_id).is_dir(), f"{task_id}: bundle gone"


@pytest.fixture(scope="module")
def baseline(scene: Scene) -> Decisions:
    """The decisions with no records at all (owner unknown)."""
    scene.reset()
    runs = _runs(scene)
    decisions = runs["list"][1]
    assert decisions == {
        scene.running: ("running", "keep", "unknown"),
        scene.stopped: ("stopped", "keep", "unknown"),
    }
    assert runs == {name: ("unknown", decisions) for name in runs}
    _untouched(scene)
    return decisions


# -- fakes at --address ------------------------------------------------------------------------


@contextlib.contextmanager
def _listener(path: str, serve: Callable[[socket.socket], None] | None) -> Iterator[None]:
    """A unix socket at ``path``: ``serve`` gets every connection on its own thread; None
    binds without listening (connections are refused)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    stop = threading.Event()
    conns: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def accept() -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            if serve is not None:
                t = threading.Thread(target=serve, args=(conn,), daemon=True)
                t.start()
                threads.append(t)

    if serve is not None:
        sock.listen(64)
        threads.append(threading.Thread(target=accept, daemon=True))
        threads[-1].start()
    try:
        yield
    finally:
        stop.set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for t in threads:
            t.join(5)
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _hang(conn: socket.socket) -> None:
    """Accept, never read, never answer (the connection is closed at the end)."""


def _garbage(conn: socket.socket) -> None:
    """Answer whatever comes with frames of random bytes, and an HTTP/2 frame header that
    announces 16 MiB that never come."""
    rng = random.Random(SEED)
    conn.settimeout(0.2)
    with contextlib.suppress(OSError):
        for _ in range(50):
            with contextlib.suppress(TimeoutError):
                if not conn.recv(65536):
                    return
            conn.sendall(rng.randbytes(512))
        conn.sendall(b"\xff\xff\xff\x04\x00\x00\x00\x00\x00")


def _http2_lies(conn: socket.socket) -> None:
    """A proper server preface (empty SETTINGS), then HEADERS on every stream made of junk."""
    conn.settimeout(0.2)
    with contextlib.suppress(OSError):
        conn.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        for stream in range(1, 40, 2):
            with contextlib.suppress(TimeoutError):
                if not conn.recv(65536):
                    return
            junk = bytes(range(200, 250))
            header = len(junk).to_bytes(3, "big") + b"\x01\x04" + stream.to_bytes(4, "big")
            conn.sendall(header + junk)


ADDRESS_FAKES: dict[str, Callable[[socket.socket], None] | None] = {
    "hangs": _hang,
    "refuses": None,
    "answers garbage": _garbage,
    "answers junk HTTP/2 headers": _http2_lies,
}


@pytest.mark.parametrize("fake", list(ADDRESS_FAKES))
def test_a_hostile_containerd_at_the_address_gives_owner_unknown(
    scene: Scene, baseline: Decisions, fake: str, socket_dir_exclusive: None
) -> None:
    scene.reset()
    with _listener(scene.node.address, ADDRESS_FAKES[fake]):
        runs = _runs(scene)
    assert runs == {name: ("unknown", baseline) for name in runs}
    _untouched(scene)


def test_something_that_listens_at_the_address_is_trusted_over_meta_db(
    scene: Scene, baseline: Decisions, socket_dir_exclusive: None
) -> None:
    """A listener that hangs means a containerd may run: its meta.db (unlocked or not) is not
    read as if it were stopped."""
    scene.reset()
    scene.put_metadb()
    try:
        with _listener(scene.node.address, _hang):
            runs = _runs(scene)
    finally:
        scene.reset()
    assert runs == {name: ("unknown", baseline) for name in runs}
    _untouched(scene)


# -- hostile meta.db ---------------------------------------------------------------------------


def test_the_real_meta_db_is_read_the_control(scene: Scene, baseline: Decisions) -> None:
    """The copy of containerd's meta.db, intact: records change the decisions (the running
    task has no record: orphaned; the stopped one has its record). Only list and a dry run."""
    scene.reset()
    scene.put_metadb()
    try:
        listed = _run(scene, "list")
        dry = _run(scene, "gc", "--min-age", "0", "--dry-run", "--stop-orphaned")
    finally:
        scene.reset()
    assert listed["owner"]["source"] == dry["owner"]["source"] == "metadb", listed["owner"]
    assert _decisions(scene, listed)[scene.stopped] == ("stopped", "keep", "record-only")
    assert _decisions(scene, listed)[scene.running][2] == "no-record"
    assert _decisions(scene, dry)[scene.running] == ("orphaned", "stop-task", "no-record")
    assert _decisions(scene, listed) != baseline
    _untouched(scene)


def _truncated(scene: Scene) -> None:
    page = 4096
    assert len(scene.metadb) > 3 * page
    scene.put_metadb(scene.metadb[: 2 * page + page // 2])


def _random(scene: Scene) -> None:
    scene.put_metadb(random.Random(SEED).randbytes(64 * 1024))


def _huge(scene: Scene) -> None:
    path = scene.put_metadb(random.Random(SEED).randbytes(8192))
    os.truncate(path, 1 << 40)  # 1 TiB, sparse: only a bounded read survives it


def _huge_behind_a_real_header(scene: Scene) -> None:
    """The real meta pages, then a sparse TiB of zero pages where the tree should be."""
    path = scene.put_metadb(scene.metadb[: 2 * 4096])
    os.truncate(path, 1 << 40)


def _file_link_out_of_root(scene: Scene) -> None:
    outside = scene.node.base / "outside-meta.db"
    outside.write_bytes(scene.metadb)
    scene.metadb_dir.mkdir(exist_ok=True)
    os.symlink(outside, scene.metadb_path)


def _dir_link_out_of_root(scene: Scene) -> None:
    outside = scene.node.base / "outside-bolt"
    outside.mkdir(exist_ok=True)
    (outside / "meta.db").write_bytes(scene.metadb)
    os.symlink(outside, scene.metadb_dir)


METADB_CASES: dict[str, Callable[[Scene], None]] = {
    "truncated": _truncated,
    "random bytes": _random,
    "huge sparse": _huge,
    "huge behind a real header": _huge_behind_a_real_header,
    "a file symlink out of root": _file_link_out_of_root,
    "a dir symlink out of root": _dir_link_out_of_root,
}


@pytest.mark.parametrize("case", list(METADB_CASES))
def test_a_hostile_meta_db_gives_owner_unknown(
    scene: Scene, baseline: Decisions, case: str, socket_dir_exclusive: None
) -> None:
    scene.reset()
    METADB_CASES[case](scene)
    try:
        runs = _runs(scene)
    finally:
        scene.reset()
    assert runs == {name: ("unknown", baseline) for name in runs}
    _untouched(scene)


LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(120)
"""


def test_a_meta_db_locked_by_another_process_is_not_read_and_not_waited_for(
    scene: Scene, baseline: Decisions, socket_dir_exclusive: None
) -> None:
    scene.reset()
    path = scene.put_metadb()
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(path)], stdout=subprocess.PIPE, text=True
    )
    created = psutil.Process(locker.pid).create_time()
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        runs = _runs(scene)
        assert locker.poll() is None, "the lock holder went away during the runs"
    finally:
        if pid_alive(locker.pid, created):
            locker.kill()
        locker.wait(10)
        wait_gone(locker.pid, created)
        scene.reset()
    assert runs == {name: ("unknown", baseline) for name in runs}
    _untouched(scene)


# -- containerd starts while shimctl reads its meta.db ----------------------------------------

#: `python -m shimctl` whose first page read of meta.db (the shared lock is held by then)
#: leaves a marker and then stalls, as on a disk that stopped answering, until the test's
#: go-ahead (which never comes before shimctl has finished).
STALLED_READ = """
import os, runpy, sys, time
import shimctl.records.bolt as bolt
marker, go, real = sys.argv.pop(1), sys.argv.pop(1), bolt._pread
def stalled(fd, size, offset):
    if not os.path.exists(marker):
        open(marker, "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(go) and time.monotonic() < deadline:
            time.sleep(0.01)
    return real(fd, size, offset)
bolt._pread = stalled
sys.argv[0] = "shimctl"
runpy.run_module("shimctl", run_name="__main__")
"""


def _containerd_opened(config: Path, path: Path) -> bool:
    """Has the containerd started with ``config`` opened ``path`` (it is at its lock)?"""
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] and str(config) in proc.info["cmdline"]:
            with contextlib.suppress(psutil.Error):
                return any(f.path == str(path) for f in proc.open_files())
    return False


def _exclusive_flock_on(path: Path) -> bool:
    """Does anyone hold an exclusive flock on ``path`` (/proc/locks: FLOCK ... WRITE)?"""
    inode = f":{os.stat(path).st_ino} "
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" not in fields and "FLOCK" in fields and "WRITE" in fields and inode in line:
            return True
    return False


def test_containerd_starts_while_list_reads_its_meta_db(node: Node) -> None:
    """containerd started while `shimctl list` is in the middle of reading meta.db (its read
    stalled) cannot take its exclusive lock meanwhile; shimctl gives up at its own bound
    (owner unknown), exits 0 and lets go of the lock, and containerd then starts with its
    records intact: a shimctl read never holds containerd's start for longer than that."""
    gen = generation("system")
    gen.require()
    with running_containerd(node, **gen.containerd_options()) as cd:
        (live,) = cd.ids("live")
        cd.run_container(live)
        api = Api(node)
        ids = [f"rec-{i:02d}-{cd.tag}" for i in range(30)]
        try:
            record = api.container(live)
            for cid in ids:
                record.id = cid
                api.create_container(record)
        finally:
            api.close()
        cd.stop()
        metadb = node.root / METADATA / "meta.db"
        marker, go = node.base / "reading", node.base / "go"
        env = node.env()
        env["PYTHONPATH"] = str(REPO)
        argv = [sys.executable, "-c", STALLED_READ, str(marker), str(go), *node.cli_args()]
        reader = subprocess.Popen(
            [*argv, "--json", "list"],
            env=env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        failed: list[BaseException] = []

        def start() -> None:
            try:
                cd.start()
            except BaseException as err:  # noqa: BLE001 - the test thread reports it
                failed.append(err)

        starter = threading.Thread(target=start)
        try:
            deadline = time.monotonic() + 30
            while not marker.exists():
                assert reader.poll() is None, reader.communicate()
                assert time.monotonic() < deadline, "list never read meta.db"
                time.sleep(0.01)
            starter.start()
            while not _containerd_opened(cd.config_path, metadb) and reader.poll() is None:
                assert starter.is_alive(), failed
                assert time.monotonic() < deadline, "containerd never opened meta.db"
                time.sleep(0.02)
            if reader.poll() is None:  # both at the lock: shimctl holds it, containerd waits
                locked = _exclusive_flock_on(metadb)
                assert reader.poll() is not None or not locked, "containerd took LOCK_EX"
            out, err = reader.communicate(timeout=RUN_BOUND)
            starter.join(RUN_BOUND)
        finally:
            go.touch()
            if reader.poll() is None:
                reader.kill()
                reader.communicate()
            if starter.ident is not None:
                starter.join(RUN_BOUND)
        assert not failed, failed
        assert reader.returncode == 0 and "Traceback" not in err, out + err
        result = json.loads(out)["result"]
        assert result["owner"]["source"] == "unknown", result["owner"]
        assert findings.by_id(result, namespace=NS)[live]["owner"] == "unknown"
        assert cd.running and set(ids) | {live} <= set(cd.containers())
        assert _exclusive_flock_on(metadb), "containerd runs without its lock on meta.db"
