"""How to reach a shim: the address plus the bootstrap params newer shims print.

containerd 2.x shims answer `start` with JSON `{"version":3,"address":...,"protocol":"ttrpc"}`;
older ones print a bare address. Both forms are accepted wherever an address is read.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from shimctl.errors import InvalidArgument, NotImplementedByShim

SUPPORTED_VERSIONS = (2, 3)
"""Bootstrap versions shimctl speaks; each names the task API version of the same number."""


def service_name(api_version: int) -> str:
    """The ttrpc service of the shim task API of that version."""
    return f"containerd.task.v{api_version}.Task"


class Bootstrap(NamedTuple):  # immutable; cheaper to define than a dataclass
    address: str
    version: int = 2
    protocol: str = "ttrpc"

    @property
    def is_json(self) -> bool:
        return self.version >= 3

    def task_service(self) -> str:
        return service_name(self.version)

    def to_json(self) -> bytes:
        doc = {"version": self.version, "address": self.address, "protocol": self.protocol}
        return json.dumps(doc, separators=(",", ":")).encode()


def parse_bootstrap(text: str, *, source: str) -> Bootstrap:
    """Parse a bare address or JSON bootstrap params; surrounding whitespace is ignored."""
    text = text.strip()
    if not text:
        raise InvalidArgument(f"{source} holds no shim address")
    if not text.startswith("{"):
        _check_address(text, source)
        return Bootstrap(address=text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"{source} holds invalid bootstrap JSON: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("address"), str) or not doc["address"]:
        raise InvalidArgument(f"{source} bootstrap params have no address")
    version = doc.get("version", 2)
    protocol = doc.get("protocol") or "ttrpc"
    if not isinstance(version, int) or isinstance(version, bool):
        raise InvalidArgument(f"{source} bootstrap version is not a number: {version!r}")
    if version > max(SUPPORTED_VERSIONS):
        raise NotImplementedByShim(
            f"{source}: unsupported shim bootstrap version {version}",
            hint="this shim is newer than shimctl understands; upgrade shimctl",
        )
    if protocol != "ttrpc":
        raise NotImplementedByShim(f"{source}: unsupported shim protocol {protocol!r}")
    _check_address(doc["address"], source)
    return Bootstrap(address=doc["address"], version=max(version, 2), protocol=protocol)


def _check_address(address: str, source: str) -> None:
    # A socket address never holds control characters or surrounding blanks; junk that does
    # (a shim's error text, a half-written file) is refused, whichever form carried it.
    if address != address.strip() or (
        not address.isprintable()  # fast path: a printable string has no control characters
        and any(ord(c) < 0x20 or c == "\x7f" for c in address)
    ):
        raise InvalidArgument(f"{source} holds no valid address: {address[:80]!r}")
