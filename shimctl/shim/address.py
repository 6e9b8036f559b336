"""Shim and containerd addresses: the one reader of the `unix://` form.

A shim address is `unix://` + an absolute socket path (runtime v2), or a bare name for an
abstract socket (the old shim form); containerd's own address is passed to shims without the
scheme. Every module that needs the path of a `unix://` address asks this one.
"""

from __future__ import annotations

import os
from pathlib import Path

from shimctl import errors

UNIX_SCHEME = "unix://"
MAX_SOCKET_PATH = 107
"""Longest unix socket name we accept in bytes (sun_path is 108 bytes incl. the NUL)."""


def unix_path(address: str) -> str | None:
    """The path of a `unix://` address exactly as written (not normalised, maybe relative or
    empty); None for an address without the scheme."""
    return address[len(UNIX_SCHEME) :] if address.startswith(UNIX_SCHEME) else None


def unix_address(path: str | Path) -> str:
    """The `unix://` address of a socket file."""
    return f"{UNIX_SCHEME}{path}"


def strip_unix(address: str) -> str:
    """containerd's address as shims are told it: without the `unix://` scheme."""
    path = unix_path(address)
    return address if path is None else path


def first_unix_path(text: str) -> str | None:
    """The path of the first `unix://` address in free text (a bundle file that may not
    parse): up to the next double quote, trimmed."""
    start = text.find(UNIX_SCHEME)
    if start < 0:
        return None
    return text[start + len(UNIX_SCHEME) :].split('"')[0].strip()


def _show(address: str) -> str:
    text = repr(address)
    return text if len(text) <= 100 else text[:97] + "..."


def parse_address(address: str) -> str | bytes:
    """Socket address to connect to: `unix:///p` -> "/p" (a file system socket);
    anything else -> b"\\0" + address (an abstract socket, the old shim form)."""
    if not isinstance(address, str):
        raise errors.InvalidArgument(f"shim address must be a string, not {type(address)!r}")
    if not address.strip():
        raise errors.InvalidArgument(f"empty shim address {_show(address)}")
    if "\0" in address:
        raise errors.InvalidArgument(f"shim address contains NUL: {_show(address)}")
    path = unix_path(address)
    if path is not None:
        if not path.startswith("/"):
            raise errors.InvalidArgument(
                f"shim address {_show(address)} is not unix:// + an absolute path"
            )
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise errors.InvalidArgument(
                f"shim socket path too long (over {MAX_SOCKET_PATH} bytes): {_show(address)}"
            )
        return path
    name = b"\0" + os.fsencode(address)
    if len(name) > MAX_SOCKET_PATH + 1:
        raise errors.InvalidArgument(
            f"abstract shim address too long (over {MAX_SOCKET_PATH} bytes): {_show(address)}"
        )
    return name
