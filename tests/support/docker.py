"""Real Docker beside shimctl: Debian's dockerd (docker.io) over a test's private containerd.

:class:`Docker` starts ``dockerd --containerd <node.address>`` with everything of its own:
``--data-root`` under the node, ``--exec-root`` in a short dir (dockerd puts unix sockets
there, and sun_path holds 107 bytes), ``--pidfile``, ``-H unix://…`` socket, no bridge, no
iptables, containers' cgroups under a parent of the test's own, the ``vfs`` storage driver
(no overlay mounts to leak). The image is imported offline (``docker import`` of a
busybox-static tree). dockerd's containerd namespace is ``moby``; its runc keeps state under
``<exec-root>/runtime-runc/moby`` (seen with dockerd 20.10.24, also for a runtime added with
``--add-runtime``), so nothing of it is in the machine's ``/run/docker``.

dockerd is stopped by its PID, verified by its create time: SIGTERM, then SIGKILL. Before
that every container is removed (``docker rm -f``). :meth:`Docker.leftovers` lists what a test
left behind: processes, runc state, cgroups, mounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from tests.support import leftovers
from tests.support.containerd import Containerd, ContainerdError, tool_env
from tests.support.helpers import Node, safety_net, unmount_under
from tests.support.oci import rootfs_tar

DOCKERD = "/usr/sbin/dockerd"
#: Debian's docker.io CLI (another docker CLI may come first on PATH).
DOCKER = "/usr/bin/docker"
NAMESPACE = "moby"
IMAGE = "shimctl-field:1"
#: The name of Docker's runtime when the test brings its own runc.
RUNTIME = "field-runc"
READY_TIMEOUT = 30.0
#: dockerd's errors while its containerd connection is not back yet (dockerd 20.10 also
#: says "connection closed: unavailable" while its grpc client reconnects).
RECONNECTING = (
    "connection refused",
    "Unavailable",
    "unavailable",
    "connection closed",
    "transport: ",
    "connection error",
)
STOP_GRACE = 20.0


class DockerError(AssertionError):
    """dockerd or the docker CLI did not do what the test needed."""


def missing() -> list[str]:
    """What the Docker field tests need and this machine lacks."""
    return [
        f"{path} (Debian package docker.io; scripts/install-field-deps.sh)"
        for path in (DOCKERD, DOCKER)
        if not os.access(path, os.X_OK)
    ]


@dataclass
class Docker:
    """One private dockerd over ``containerd`` (which must run, on the test's node)."""

    containerd: Containerd
    #: A runc for Docker's default runtime instead of runc on PATH (``--add-runtime``).
    runc: str = ""
    dir: Path = field(init=False)
    exec_root: Path = field(init=False)
    cgroup_parent: str = field(init=False)
    #: What :meth:`cleanup` found left behind (before sweeping it).
    left: list[str] = field(default_factory=list, init=False)
    #: Set when the test failed (or failed as expected): :meth:`cleanup` then also stops the
    #: node's processes itself, so the session's leak report names only tests that passed.
    failed: bool = field(default=False, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _create_time: float | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.dir = self.node.base / "docker"
        self.dir.mkdir(exist_ok=True)
        self.exec_root = Path(tempfile.mkdtemp(prefix=f"sfd-{self.containerd.tag}-", dir="/tmp"))
        self.cgroup_parent = f"/shimctl-field-{self.containerd.tag}"

    @property
    def node(self) -> Node:
        return self.containerd.node

    @property
    def socket(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def runc_root(self) -> Path:
        """Where Docker's runc keeps its containers' state (``runtime-runc`` also for a runtime
        added with ``--add-runtime``, as seen with dockerd 20.10.24)."""
        return self.exec_root / "runtime-runc" / NAMESPACE

    @property
    def log_path(self) -> Path:
        return self.dir / "dockerd.log"

    # -- the process --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        proc = self._proc
        if proc is None or proc.poll() is not None or self._create_time is None:
            return False
        try:
            ps = psutil.Process(proc.pid)
            return abs(ps.create_time() - self._create_time) < 1e-3
        except psutil.NoSuchProcess:
            return False

    def start(self) -> None:
        """Start dockerd; wait until ``docker version`` answers and the pidfile is its PID."""
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                DOCKERD,
                "--containerd",
                self.node.address,
                "--containerd-namespace",
                NAMESPACE,
                "--data-root",
                str(self.dir / "data"),
                "--exec-root",
                str(self.exec_root),
                "--pidfile",
                str(self.dir / "docker.pid"),
                "-H",
                f"unix://{self.socket}",
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
                "--cgroup-parent",
                self.cgroup_parent,
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                *(
                    [f"--add-runtime={RUNTIME}={self.runc}", f"--default-runtime={RUNTIME}"]
                    if self.runc
                    else []
                ),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=tool_env(self.containerd.path_prefix),
            start_new_session=True,
        )
        with contextlib.suppress(psutil.NoSuchProcess):
            self._create_time = psutil.Process(self._proc.pid).create_time()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise DockerError(f"dockerd exited with {self._proc.returncode}:\n{self.log()}")
            if self.docker("version", check=False, timeout=5).returncode == 0:
                break
            if time.monotonic() >= deadline:
                self.stop()
                raise DockerError(f"dockerd did not answer in {READY_TIMEOUT}s:\n{self.log()}")
            time.sleep(0.05)
        pidfile = (self.dir / "docker.pid").read_text().strip()
        if pidfile != str(self._proc.pid):
            raise DockerError(f"dockerd's pidfile says {pidfile}, we started {self._proc.pid}")

    def stop(self) -> None:
        """SIGTERM dockerd by verified PID; SIGKILL after the grace. Containers are left."""
        proc = self._proc
        if proc is not None and self.running:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                if self.running:
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        elif proc is not None:
            proc.poll()
        self._proc = None
        self._create_time = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # -- the CLI ------------------------------------------------------------------------------

    def docker(
        self, *args: str, check: bool = True, timeout: float = 60, stdin_bytes: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``docker -H unix://<socket> *args`` (Debian's CLI), output as text."""
        env = {k: v for k, v in tool_env().items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.dir / "cli")
        res = subprocess.run(
            [DOCKER, "-H", f"unix://{self.socket}", *args],
            input=stdin_bytes,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        out = subprocess.CompletedProcess(
            res.args, res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode()
        )
        if check and res.returncode != 0:
            raise DockerError(f"docker {' '.join(args)} failed ({res.returncode}): {out.stderr}")
        return out

    def docker_connected(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """A docker command, retried only while dockerd has no containerd connection (after
        containerd restarts dockerd's grpc client reconnects with backoff); other errors
        are returned at once."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.docker(*args, check=False)
            if res.returncode == 0 or time.monotonic() >= deadline:
                return res
            if not any(m in res.stderr for m in RECONNECTING):
                return res
            time.sleep(0.2)

    def import_image(self) -> None:
        """``docker import`` a busybox-static tree as :data:`IMAGE` (no registry)."""
        self.docker("import", "-", IMAGE, stdin_bytes=rootfs_tar())

    def run(self, name: str, *argv: str, options: Sequence[str] = ()) -> str:
        """``docker run -d --network none --name <name> <options> IMAGE argv``; its full id."""
        command = argv or ("/bin/sleep", "600")
        res = self.docker(
            "run", "-d", "--network", "none", "--name", name, *options, IMAGE, *command
        )
        return res.stdout.strip()

    def inspect(self, name: str) -> dict[str, Any]:
        doc = json.loads(self.docker("inspect", name).stdout)
        if not isinstance(doc, list) or not doc:
            raise DockerError(f"docker inspect {name}: {doc!r}")
        return dict(doc[0])

    def state(self, name: str) -> tuple[str, int]:
        """(State.Status, State.Pid) of a container."""
        st = self.inspect(name)["State"]
        return str(st["Status"]), int(st["Pid"])

    def container_ids(self) -> list[str]:
        return self.docker("ps", "-aq", "--no-trunc").stdout.split()

    def remove_all(self) -> list[str]:
        """``docker rm -f`` every container; returns the errors."""
        errors: list[str] = []
        for cid in self.container_ids():
            res = self.docker_connected("rm", "-f", cid)
            if res.returncode != 0:
                errors.append(f"docker rm -f {cid[:12]}: {res.stderr.strip()}")
        return errors

    # -- what is left -------------------------------------------------------------------------

    def leftovers(self) -> list[str]:
        """Processes, runc state, cgroups and mounts of Docker's containers still here."""
        return leftovers.find(
            self.cgroup_parent, [self.runc_root], [self.node.base, self.exec_root]
        )

    def cleanup(self) -> list[str]:
        """Remove every container (containerd is started for it if a test left it stopped),
        stop dockerd, remove the cgroup parent and the exec root. Returns what failed."""
        problems: list[str] = []
        try:
            if not self.containerd.running:
                self.containerd.start()
            if not self.running:
                self.stop()
                self.start()
            problems += self.remove_all()
        except (ContainerdError, DockerError, subprocess.SubprocessError) as err:
            problems.append(f"docker cleanup: {err}")
        self.stop()
        # What the test left, seen after its daemons stopped (dockerd holds a mount of its
        # own while it runs), then swept; the fixture asserts it was empty.
        if self.failed:
            safety_net(self.node)
        self.left = self.leftovers()
        leftovers.sweep(self.cgroup_parent, [self.runc_root])
        if self.failed:
            unmount_under(self.node.base)
        unmount_under(self.exec_root)
        shutil.rmtree(self.exec_root, ignore_errors=True)
        return problems


@contextlib.contextmanager
def running_docker(containerd: Containerd, runc: str = "") -> Iterator[Docker]:
    """A started dockerd over ``containerd`` with the field image imported; every container
    removed and dockerd stopped at the end (then the caller stops containerd)."""
    docker = Docker(containerd, runc)
    try:
        docker.start()
        docker.import_image()
        yield docker
    finally:
        problems = docker.cleanup()
        if problems and not docker.failed:
            import warnings

            warnings.warn("docker cleanup: " + "; ".join(problems), stacklevel=2)
