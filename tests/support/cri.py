"""containerd's CRI plugin, driven as the kubelet drives it: the Kubernetes CRI v1 API over gRPC.

- :func:`stubs`: the Python stubs of the vendored ``tests/support/cri_proto/api.proto``,
  generated on first use with grpcio-tools into a cache keyed by the proto's hash.
- :func:`cri_config`: a private containerd's config.toml with the CRI plugin on and no CNI:
  pods use the host network (NamespaceMode NODE), for which the CRI plugin sets up no pod
  network (containerd ``pkg/cri/server/sandbox_run.go``, v1.6.20), so an empty ``conf_dir``
  only leaves the runtime's NetworkReady condition false (works on 1.6, 1.7 and 2.1). The
  pause image is ``sandbox_image``, imported offline; runc keeps its state under the node's
  private root; ``restrict_oom_score_adj`` because the sandbox's -998 needs
  CAP_SYS_RESOURCE, which a test machine that is itself a container may lack.
- :class:`Cri`: one private containerd with CRI, and a small client (pods, containers, status).

The version 2 config format is read by 1.6 and 1.7, and migrated by 2.x.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support import cri_layout, leftovers
from tests.support.containerd import DISABLED_PLUGINS, Containerd, ContainerdError, config_toml
from tests.support.cri_layout import private
from tests.support.helpers import Node, safety_net, unmount_under
from tests.support.oci import IMAGE, oci_archive

PROTO = Path(__file__).parent / "cri_proto" / "api.proto"
STUB_CACHE = Path(os.environ.get("SHIMCTL_CRI_STUBS", "/tmp/shimctl-cri-stubs"))
#: Module name of the generated code (``<name>_pb2``, ``<name>_pb2_grpc``): unique, so the
#: protobuf descriptor pool and sys.modules hold no other "api".
STUB_NAME = "shimctl_cri_v1"
NAMESPACE = cri_layout.NAMESPACE
#: Deadline of every CRI call (RunPodSandbox on a busy 2-core machine takes about a second).
CALL_TIMEOUT = 60.0
CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def stubs() -> tuple[ModuleType, ModuleType]:
    """(messages, services) modules of the CRI v1 API, generating them once per proto."""
    text = PROTO.read_bytes()
    key = hashlib.sha256(text).hexdigest()[:16]
    out = STUB_CACHE / key
    if not (out / f"{STUB_NAME}_pb2_grpc.py").is_file():
        from grpc_tools import protoc  # type: ignore[import-untyped,unused-ignore]

        STUB_CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=STUB_CACHE))
        (tmp / f"{STUB_NAME}.proto").write_bytes(text)
        rc = protoc.main(
            [
                "protoc",
                f"-I{tmp}",
                f"--python_out={tmp}",
                f"--grpc_python_out={tmp}",
                f"{tmp / STUB_NAME}.proto",
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {PROTO}")
        # Atomic: another xdist worker may have generated the same key meanwhile.
        with contextlib.suppress(OSError):
            os.rename(tmp, out)
    if str(out) not in sys.path:
        sys.path.insert(0, str(out))
    return importlib.import_module(f"{STUB_NAME}_pb2"), importlib.import_module(
        f"{STUB_NAME}_pb2_grpc"
    )


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cri_config(node: Node, sandbox_image: str = IMAGE, binary_name: str = "") -> str:
    """config.toml (version 2) for ``node`` with the CRI plugin on, no CNI, private dirs;
    ``binary_name``: the runc binary the shim runs (default: runc on PATH)."""
    base = config_toml(node)
    disabled = ", ".join(_q(p) for p in DISABLED_PLUGINS if p != CRI_PLUGIN)
    lines = [
        f"disabled_plugins = [{disabled}]" if line.startswith("disabled_plugins") else line
        for line in base.splitlines()
    ]
    cri = f'[plugins."{CRI_PLUGIN}"]'
    lines += [
        cri,
        f"  sandbox_image = {_q(sandbox_image)}",
        "  enable_selinux = false",
        "  disable_apparmor = true",
        # The sandbox asks oom_score_adj -998, which needs CAP_SYS_RESOURCE: a test machine
        # (a container itself) may lack it. Clamped to containerd's own score instead.
        "  restrict_oom_score_adj = true",
        '  stream_server_address = "127.0.0.1"',
        '  stream_server_port = "0"',
        "  disable_tcp_service = true",
        f"{cri[:-1]}.cni]",
        f"  bin_dir = {_q(str(node.base / 'cni' / 'bin'))}",
        f"  conf_dir = {_q(str(node.base / 'cni' / 'net.d'))}",
        f"{cri[:-1]}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"{cri[:-1]}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"{cri[:-1]}.containerd.runtimes.runc.options]",
        f"  Root = {_q(private(node).runc_root)}",
        "  SystemdCgroup = false",
        *([f"  BinaryName = {_q(binary_name)}"] if binary_name else []),
        "",
    ]
    return "\n".join(lines)


@dataclass
class Pod:
    """A pod made through CRI: its sandbox id and its containers' ids."""

    sandbox_id: str
    config: Any
    containers: list[str] = field(default_factory=list)


@dataclass
class Cri:
    """A private containerd over ``node`` with its CRI plugin, and a CRI v1 client to it."""

    node: Node
    options: dict[str, Any] = field(default_factory=dict)
    binary_name: str = ""
    containerd: Containerd = field(init=False)
    cgroup_parent: str = field(init=False)
    pods: list[Pod] = field(default_factory=list, init=False)
    #: What :meth:`cleanup` found left behind (before sweeping it).
    left: list[str] = field(default_factory=list, init=False)
    #: Set when the test failed (or failed as expected): :meth:`cleanup` then also stops the
    #: node's processes itself, so the session's leak report names only tests that passed.
    failed: bool = field(default=False, init=False)
    _channel: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.containerd = Containerd(self.node, namespace=NAMESPACE, **self.options)
        self.containerd.config_path.write_text(cri_config(self.node, binary_name=self.binary_name))
        # Every pod's cgroups go under one parent of this test's own (cgroupfs driver).
        self.cgroup_parent = f"/shimctl-field-{self.containerd.tag}"
        (self.node.base / "cni" / "net.d").mkdir(parents=True, exist_ok=True)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start containerd, import the pause image, wait until CRI answers."""
        self.containerd.start(timeout=60)
        archive = self.node.base / "field-image.tar"
        if not archive.exists():
            archive.write_bytes(oci_archive())
        self.containerd.ctr("images", "import", "--snapshotter", "overlayfs", str(archive))
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the CRI Version call answers (the plugin loads after containerd's socket)."""
        pb, _ = stubs()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.runtime.Version(pb.VersionRequest(), timeout=5)
                return
            except Exception as err:
                if time.monotonic() >= deadline:
                    raise ContainerdError(f"CRI did not answer in {timeout}s: {err}") from err
                time.sleep(0.1)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    @property
    def runtime(self) -> Any:
        """The RuntimeService stub (a fresh channel after containerd restarts)."""
        import grpc  # type: ignore[import-untyped,unused-ignore]

        _, svc = stubs()
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.node.address}")
        return svc.RuntimeServiceStub(self._channel)

    # -- pods and containers ------------------------------------------------------------------

    def pod_config(self, name: str) -> Any:
        pb, _ = stubs()
        uid = hashlib.sha256(f"{self.node.base}/{name}".encode()).hexdigest()[:16]
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="field", attempt=0),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=self.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE)
                ),
            ),
        )

    def run_pod(self, name: str) -> Pod:
        """RunPodSandbox (host network); the pod is remembered for :meth:`remove_all`."""
        pb, _ = stubs()
        config = self.pod_config(name)
        res = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=60)
        pod = Pod(res.pod_sandbox_id, config)
        self.pods.append(pod)
        return pod

    def create_container(self, pod: Pod, name: str, *argv: str) -> str:
        """CreateContainer in ``pod`` (the field image, ``argv`` as command; default sleep)."""
        pb, _ = stubs()
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=IMAGE),
            command=list(argv or ("/bin/sleep", "600")),
            linux=pb.LinuxContainerConfig(),
        )
        res = self.runtime.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=pod.sandbox_id, config=config, sandbox_config=pod.config
            ),
            timeout=CALL_TIMEOUT,
        )
        pod.containers.append(res.container_id)
        return str(res.container_id)

    def start_container(self, container_id: str) -> None:
        pb, _ = stubs()
        self.runtime.StartContainer(
            pb.StartContainerRequest(container_id=container_id), timeout=CALL_TIMEOUT
        )

    def run_container(self, pod: Pod, name: str, *argv: str) -> str:
        container_id = self.create_container(pod, name, *argv)
        self.start_container(container_id)
        return container_id

    def container_states(self) -> dict[str, str]:
        """ListContainers: id -> state name (CONTAINER_RUNNING, ...)."""
        pb, _ = stubs()
        res = self.runtime.ListContainers(pb.ListContainersRequest(), timeout=CALL_TIMEOUT)
        return {c.id: pb.ContainerState.Name(c.state) for c in res.containers}

    def sandbox_states(self) -> dict[str, str]:
        """ListPodSandbox: id -> state name (SANDBOX_READY / SANDBOX_NOTREADY)."""
        pb, _ = stubs()
        res = self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=CALL_TIMEOUT)
        return {s.id: pb.PodSandboxState.Name(s.state) for s in res.items}

    def container_pid(self, container_id: str) -> int:
        """The container's init PID, from ContainerStatus's verbose info."""
        import json

        pb, _ = stubs()
        res = self.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=container_id, verbose=True),
            timeout=CALL_TIMEOUT,
        )
        return int(json.loads(res.info["info"])["pid"])

    def stop_and_remove_all(self) -> list[str]:
        """StopPodSandbox + RemovePodSandbox for every pod CRI lists (which removes their
        containers); returns the errors (empty when CRI did it all)."""
        pb, _ = stubs()
        errors: list[str] = []
        for sandbox_id in self.sandbox_states():
            for call, request in (
                (self.runtime.StopPodSandbox, pb.StopPodSandboxRequest),
                (self.runtime.RemovePodSandbox, pb.RemovePodSandboxRequest),
            ):
                try:
                    call(request(pod_sandbox_id=sandbox_id), timeout=CALL_TIMEOUT)
                except Exception as err:  # noqa: BLE001 - collected: cleanup goes on
                    errors.append(f"{sandbox_id[:12]}: {type(err).__name__}: {err}")
        return errors

    @property
    def runc_root(self) -> Path:
        """Where the pods' runc keeps state (the runtime's ``Root`` + namespace)."""
        return Path(private(self.node).runc_state)

    def leftovers(self) -> list[str]:
        """Processes, runc state, cgroups and mounts of the pods still on the machine."""
        return leftovers.find(self.cgroup_parent, [self.runc_root], [self.node.base])

    def cleanup(self) -> list[str]:
        """Remove every pod through CRI (starting containerd for it if needed), then
        everything else through ctr, then stop containerd. Returns what failed."""
        problems: list[str] = []
        if not self.containerd.running:
            try:
                self.containerd.start(timeout=60)
            except ContainerdError as err:
                problems.append(str(err))
        if self.containerd.running:
            try:
                self.close()
                self.wait_ready()
                problems += self.stop_and_remove_all()
            except Exception as err:  # noqa: BLE001 - reported: cleanup goes on
                problems.append(f"CRI cleanup: {err}")
        self.close()
        problems += self.containerd.cleanup()
        # What the test left, seen after its daemons stopped (dockerd holds a mount of its
        # own while it runs), then swept; the fixture asserts it was empty.
        if self.failed:
            safety_net(self.node)
        self.left = self.leftovers()
        leftovers.sweep(self.cgroup_parent, [self.runc_root])
        if self.failed:
            unmount_under(self.node.base)
        return problems


@contextlib.contextmanager
def running_cri(node: Node, binary_name: str = "", **options: Any) -> Iterator[Cri]:
    """A started private containerd with CRI over ``node``; every pod removed at the end.
    ``options``: :class:`Containerd` fields (another generation's binaries)."""
    cri = Cri(node, options, binary_name)
    try:
        cri.start()
        yield cri
    finally:
        problems = cri.cleanup()
        if problems and not cri.failed:
            import warnings

            warnings.warn("CRI cleanup: " + "; ".join(problems), stacklevel=2)
