"""Mounts under a path: which there are (/proc/self/mountinfo) and peeling them off
(umount2 without following a symlink), as containerd's mount.UnmountAll does."""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shimctl.errors import FailedPrecondition, Unsafe

if TYPE_CHECKING:
    import ctypes


def mount_points_under(path: Path) -> list[str]:
    """Mount points at or below `path`, from /proc/self/mountinfo.

    mountinfo names mount points by their real path, so `path` is compared both as given and
    with its symlinks resolved (e.g. a state dir under /var/run, a link to /run).
    """
    tops = {os.path.normpath(path), os.path.realpath(path)}
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_bytes().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split(b" ")
        if len(fields) < 5:
            continue
        # Field 5 is the mount point, with space, tab, newline and backslash octal-escaped.
        point = os.fsdecode(_MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), fields[4]))
        if any(point == top or point.startswith(top.rstrip("/") + "/") for top in tops):
            found.append(point)
    return found


_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")
_libc: ctypes.CDLL | None = None
_UMOUNT_NOFOLLOW = 8  # linux/fs.h: do not follow a symlink in the last component


def _umount2(target: str, flags: int) -> int:
    global _libc
    if _libc is None:
        import ctypes.util  # only an unmount needs libc

        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if _libc.umount2(target.encode(), flags) == 0:
        return 0
    import ctypes

    return ctypes.get_errno()


def unmount_all(target: Path) -> None:
    """Peel off every mount stacked on `target` (containerd's UnmountAll).

    A symlinked `target` is refused: umount2 would follow it and unmount what it points at.
    """
    if not os.path.lexists(target):
        return
    if os.path.islink(target):
        raise Unsafe(f"{target} is a symlink; not unmounting through it")
    for _ in range(100):
        err = _umount2(str(target), _UMOUNT_NOFOLLOW)
        if err == 0:
            continue
        if err in (errno.EINVAL, errno.ENOENT):
            return
        if err == errno.EBUSY:
            for _retry in range(50):
                time.sleep(0.05)
                err = _umount2(str(target), _UMOUNT_NOFOLLOW)
                if err != errno.EBUSY:
                    break
            if err == 0:
                continue
            if err in (errno.EINVAL, errno.ENOENT):
                return
        raise FailedPrecondition(f"failed to unmount {target}: {os.strerror(err)}")
    raise FailedPrecondition(f"failed to unmount {target}: too many stacked mounts")
