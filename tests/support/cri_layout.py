"""The files a containerd-with-CRI node has, in one list: the field harness (tests/support/cri.py)
runs its private containerd on this layout moved under the test's node, and
tests/unit/test_deploy.py checks that the Kubernetes DaemonSet in deploy/ mounts every one of
these paths of the host, at the same path.

Defaults from containerd v1.6.20: root /var/lib/containerd, state /run/containerd and the socket
/run/containerd/containerd.sock (`defaults/defaults_unix.go`); the runc shim's default runc root
/run/containerd/runc, under which runc keeps `<namespace>/<id>` (`pkg/process/utils.go`,
`RuncRoot`); the shims' sockets in /run/containerd/s, the default state dir whatever containerd's
own (`runtime/v2/shim/util_unix.go`, `socketRoot`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.helpers import DEFAULT_RUNC_ROOT, SHIM_SOCKET_DIR, Node

#: The namespace the CRI plugin keeps pods in.
NAMESPACE = "k8s.io"


@dataclass(frozen=True)
class CriLayout:
    root: str  # containerd's root: ROOT/io.containerd.runtime.v2.task/<ns>/<id> work dirs
    state: str  # containerd's state: the bundles, STATE/io.containerd.runtime.v2.task/<ns>/<id>
    address: str  # containerd's gRPC socket (its records, through the API)
    runc_root: str  # the runtime's Root option; runc keeps <runc_root>/<ns>/<id>
    shim_socket_dir: str  # every shim's socket, whatever containerd's state dir
    namespace: str = NAMESPACE

    @property
    def runc_state(self) -> str:
        """Where runc keeps the pods' containers (``<runc_root>/<namespace>``)."""
        return f"{self.runc_root}/{self.namespace}"

    def paths(self) -> dict[str, str]:
        """Every path shimctl reads or changes on such a node, by what it is."""
        return {
            "root": self.root,
            "state": self.state,
            "address": self.address,
            "runc_state": self.runc_state,
            "shim_socket_dir": self.shim_socket_dir,
        }


#: A node on containerd's defaults, as the DaemonSet finds it.
HOST = CriLayout(
    root="/var/lib/containerd",
    state="/run/containerd",
    address="/run/containerd/containerd.sock",
    runc_root=DEFAULT_RUNC_ROOT,
    shim_socket_dir=str(SHIM_SOCKET_DIR),
)


def private(node: Node) -> CriLayout:
    """The same layout on a test's private node: its own root, state, socket and runc root (the
    host's is shared by parallel tests); the shims' socket dir is the host's, as it is for
    every containerd."""
    return CriLayout(
        root=str(node.root),
        state=str(node.state),
        address=node.address,
        runc_root=str(node.runc_root),
        shim_socket_dir=HOST.shim_socket_dir,
    )
