"""OCI runtime spec helpers: the minimal spec `start` writes when none is given, and readers."""

from __future__ import annotations

import json
from typing import Any

from shimctl.errors import InvalidArgument

_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]

# CRI marks a pod's sandbox (pause) container this way (metadata.md §4).
CRI_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CRI_SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


def default_spec(args: list[str] | None = None) -> dict[str, Any]:
    """A small spec the runc shim and runc accept: rootfs at `rootfs`, no terminal."""
    return {
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

    Go's JSON decoding matches keys case-insensitively, so we do too.
    """
    linux = _get_ci(spec, "linux")
    if not isinstance(linux, dict):
        return None
    mappings = _get_ci(linux, "gidMappings")
    if not isinstance(mappings, list):
        return None
    for mapping in mappings:
        if isinstance(mapping, dict) and _get_ci(mapping, "containerID") == 0:
            host = _get_ci(mapping, "hostID")
            return host if isinstance(host, int) and host != 0 else None
    return None


def spec_annotations(spec: dict[str, Any]) -> dict[str, str]:
    value = spec.get("annotations")
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def _get_ci(doc: dict[str, Any], key: str) -> Any:
    if key in doc:
        return doc[key]
    lowered = key.lower()
    for k, v in doc.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None
