"""OCI runtime spec helpers: the minimal spec `start` writes when none is given, and readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shimctl.errors import InvalidArgument, ShimctlError
from shimctl.node import fs
from shimctl.node.gopath import go_join

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]

# CRI marks a pod's sandbox (pause) container this way (metadata.md §4).
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
# The runc shim groups bundles into one shim by this annotation first (layout.md §7).
GROUP_ANNOTATION = "io.containerd.runc.v2.group"
CONFIG = "config.json"
# A bundle's config.json is read whole; a spec larger than this is not one shimctl trusts.
MAX_SPEC_BYTES = 4 * 1024 * 1024


def default_spec(
    args: list[str] | None = None, *, namespace: str | None = None, id: str | None = None
) -> dict[str, Any]:
    """A small spec the runc shim and runc accept: rootfs at `rootfs`, no terminal.

    Given the task's namespace and id, its cgroup is `/<namespace>/<id>`, as ctr's default
    spec has it (CgroupsPath: path.Join("/", ns, id), containerd 301026e5 pkg/oci/spec.go):
    without the namespace, two tasks with one id in two namespaces would share a cgroup, and
    each would count the other's processes as its own."""
    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args or ["/bin/sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {key: list(_CAPS) for key in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "shimctl",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": [*_NOSUID_NOEXEC_NODEV, "ro"],
            },
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"],
        },
    }
    if namespace is not None and id is not None:
        spec["linux"]["cgroupsPath"] = go_join("/", namespace, id)
    return spec


def encode_spec(spec: dict[str, Any]) -> bytes:
    return json.dumps(spec, separators=(",", ":")).encode()


def parse_spec(data: bytes, source: str) -> dict[str, Any]:
    """Parse spec JSON; anything but a JSON object is an InvalidArgument naming `source`."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidArgument(
            f"spec {source} is not valid JSON: {err}", hint="pass an OCI runtime spec (config.json)"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"spec {source} must be a JSON object")
    return doc


def remapped_gid(spec: dict[str, Any]) -> int | None:
    """Host GID of the first gid mapping for container GID 0, if not 0 (bundle_linux.go).

    Decoded as Go's encoding/json decodes into the OCI structs: keys match without regard to
    case (the last matching key wins), a missing or null field is 0, a null mapping is all
    zeros, and a value of the wrong type is an error (InvalidArgument), as it fails
    containerd's NewBundle.
    """
    linux = _get_ci(spec, "linux")
    if linux is None:
        return None
    if not isinstance(linux, dict):
        raise InvalidArgument("spec: linux must be an object")
    mappings = _get_ci(linux, "gidMappings")
    if mappings is None:
        return None
    if not isinstance(mappings, list):
        raise InvalidArgument("spec: linux.gidMappings must be an array")
    found: int | None = None
    for i, mapping in enumerate(mappings):
        if mapping is None:
            mapping = {}
        if not isinstance(mapping, dict):
            raise InvalidArgument(f"spec: linux.gidMappings[{i}] must be an object")
        container_id = _uint32(mapping, "containerID", i)
        host_id = _uint32(mapping, "hostID", i)
        _uint32(mapping, "size", i)
        if container_id == 0 and found is None:
            found = host_id
    return found or None


def _uint32(mapping: dict[str, Any], key: str, index: int) -> int:
    value = _get_ci(mapping, key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        raise InvalidArgument(
            f"spec: linux.gidMappings[{index}].{key} must be an unsigned 32-bit integer, "
            f"got {value!r}"
        )
    return value


def spec_annotations(spec: dict[str, Any]) -> dict[str, str]:
    """The spec's string annotations; anything else under `annotations` is ignored."""
    value = spec.get("annotations")
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def bundle_annotations(bundle_dir: str | Path) -> dict[str, str]:
    """The annotations of the spec in `bundle_dir`/config.json, read bounded and without
    following a link; {} when it is missing, unreadable or not a spec (best effort: callers
    only use them to group bundles, never to decide alone that something is dead)."""
    try:
        data = fs.read_small(f"{bundle_dir}/{CONFIG}", limit=MAX_SPEC_BYTES)
        return spec_annotations(parse_spec(data, CONFIG))
    except (OSError, ShimctlError):
        return {}


def cri_sandbox_of(bundle_dir: str | Path, id: str) -> str | None:
    """The pod sandbox a CRI container bundle belongs to, from its spec's annotations
    (container-type `container` and the sandbox id); None for anything else. Only specs that
    mention the annotation are parsed: most bundles on a node are not CRI members."""
    try:
        data = fs.read_small(f"{bundle_dir}/{CONFIG}", limit=MAX_SPEC_BYTES)
        if CRI_SANDBOX_ID.encode() not in data:
            return None
        annotations = spec_annotations(parse_spec(data, CONFIG))
    except (OSError, ShimctlError):
        return None
    sandbox = annotations.get(CRI_SANDBOX_ID)
    if annotations.get(CRI_CONTAINER_TYPE) != "container" or not sandbox or sandbox == id:
        return None
    return sandbox


def marks_sandbox(annotations: dict[str, str], id: str) -> bool:
    """Do a bundle's annotations mark it the CRI pod sandbox (the pause container) `id`?"""
    return annotations.get(CRI_CONTAINER_TYPE) == "sandbox" or annotations.get(CRI_SANDBOX_ID) == id


def shim_group(annotations: dict[str, str], id: str) -> str:
    """The key the runc shim groups a bundle by, and hashes into its socket name: the group
    annotation, else the CRI sandbox id, else the task's own id (layout.md §7)."""
    return annotations.get(GROUP_ANNOTATION) or annotations.get(CRI_SANDBOX_ID) or id


def _get_ci(doc: dict[str, Any], key: str) -> Any:
    """Go's json field matching: an exact or case-insensitive key; the last one present wins,
    as Go assigns each matching key in turn."""
    lowered = key.lower()
    value = None
    for k, v in doc.items():
        if isinstance(k, str) and k.lower() == lowered:
            value = v
    return value
