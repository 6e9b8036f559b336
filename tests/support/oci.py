"""Images built offline from busybox-static, for the field tests' real clients of containerd.

- :func:`rootfs_tar`: a plain tarball of a busybox tree (what ``docker import -`` reads).
- :func:`oci_archive`: an OCI image layout in one tarball (what ``ctr images import`` reads),
  one uncompressed layer, named by the ``io.containerd.image.name`` annotation, which
  containerd's importer uses as the image name (containerd ``images/archive/importer.go``,
  v1.6.20: ``ImportIndex``), so the image needs no registry. Its entrypoint only sleeps: it is
  the CRI pause image and the containers' image at once.

Format: OCI image spec v1.0 (https://github.com/opencontainers/image-spec/blob/v1.0.2/).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import tarfile
import tempfile
from pathlib import Path

from tests.support.helpers import populate_busybox_rootfs

#: The image both clients run; the same name everywhere (containerd's image store is per node).
IMAGE = "localhost/shimctl-field:1"
#: A sleep that outlives every test (busybox sleep takes seconds, not ``infinity``).
ENTRYPOINT = ("/bin/sleep", "2147483")

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def goarch() -> str:
    """The machine's architecture in OCI (GOARCH) spelling."""
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def rootfs_tar() -> bytes:
    """A tarball of a busybox-static tree (``bin/busybox`` and its applet links)."""
    with tempfile.TemporaryDirectory(prefix="shimctl-rootfs-") as tmp:
        root = Path(tmp)
        populate_busybox_rootfs(root)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
        return buf.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def oci_archive(name: str = IMAGE, entrypoint: tuple[str, ...] = ENTRYPOINT) -> bytes:
    """An OCI image layout tarball of one busybox layer, named ``name``."""
    blobs: dict[str, bytes] = {}
    layer = rootfs_tar()
    layer_digest = _blob(blobs, layer)
    config = _json(
        {
            "architecture": goarch(),
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    )
    config_digest = _blob(blobs, config)
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    )
    manifest_digest = _blob(blobs, manifest)
    index = _json(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": goarch(), "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
            ],
        }
    )
    files = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for digest, data in blobs.items():
        files["blobs/sha256/" + digest.removeprefix("sha256:")] = data
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(dirname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arcname, data in files.items():
            info = tarfile.TarInfo(arcname)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
