"""One entry point: what containerd, the owner of the shims, knows about them right now.

- Something accepts a connection at containerd's address: that containerd's gRPC API is the
  only source (a containerd that serves its socket owns its state; its meta.db is locked, or
  being opened or closed). A bad answer gives "owner unknown", not a fallback.
- Nothing accepts: containerd is stopped, and its meta.db is read, read-only.
- Neither works: "owner unknown" (``Source.UNKNOWN``), with the reason; callers then behave
  exactly as they did without records.

Nothing here raises, and the whole read is bounded by ``timeout``.
"""

from __future__ import annotations

import time
from pathlib import Path

from shimctl.records.bolt import BoltError
from shimctl.records.model import OwnerRecords, unknown
from shimctl.records.peer import dial

DEFAULT_TIMEOUT = 2.0


def read_owner_records(root: Path, address: str, timeout: float = DEFAULT_TIMEOUT) -> OwnerRecords:
    """The records of the containerd with root dir ``root`` and gRPC address ``address``."""
    deadline = time.monotonic() + timeout
    peer = dial(address, timeout)
    remaining = max(deadline - time.monotonic(), 0.001)
    if peer.accepted:
        from shimctl.records.api import query_api

        return query_api(address, peer, remaining)
    from shimctl.records.metadb import read_metadb

    try:
        return read_metadb(root, timeout=remaining)
    except BoltError as err:
        return unknown(err.kind, f"containerd is not answering ({peer.error}) and {err.message}")
