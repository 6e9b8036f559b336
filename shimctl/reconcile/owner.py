"""The owner's evidence: what containerd (API while it answers, meta.db while it is stopped)
knows, read on its own thread while the shims are probed.

A containerd that hangs, refuses or answers garbage gives "owner unknown" (the readers bound
every call by a deadline and never raise); an unexpected error here does the same, so the
records can only ever add evidence, never stop a run or make it more aggressive.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from shimctl.settings import Settings

if TYPE_CHECKING:
    from shimctl.records.model import OwnerRecords

# The whole owner read is bounded by this many seconds (the probes take about as long).
OWNER_TIMEOUT = 2.0


class OwnerQuery(threading.Thread):
    """Reads the owner's records in the background; ``result()`` waits for them."""

    def __init__(self, settings: Settings, timeout: float = OWNER_TIMEOUT) -> None:
        super().__init__(name="shimctl-owner", daemon=True)
        self.settings, self.timeout = settings, timeout
        self.records: OwnerRecords | None = None
        self.start()

    def run(self) -> None:
        # Imported here: the records package stays off every command's start-up path, and
        # grpcio is imported by the readers only once containerd's socket accepts.
        from shimctl.records.model import unknown

        try:
            from shimctl.records.owner import read_owner_records

            self.records = read_owner_records(
                self.settings.root, self.settings.address, self.timeout
            )
        except Exception as err:  # noqa: BLE001  # never fatal: the owner is unknown then
            self.records = unknown(f"error:{type(err).__name__}", f"records unreadable: {err}")

    def result(self) -> OwnerRecords:
        # The readers bound themselves; the extra second only guards against a reader bug.
        self.join(self.timeout + 1.0)
        if self.records is None:
            from shimctl.records.model import unknown

            return unknown("timeout", "containerd's records were not read in time")
        return self.records
