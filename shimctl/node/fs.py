"""Small file-system primitives (bounded reads, atomic writes, removal inside a top dir)
with the safety rules shimctl relies on everywhere; mounts are in node/mounts.py.

Reads never follow symlinks and are bounded in size; writes are atomic (temp file + rename)
with explicit modes, so the result does not depend on the caller's umask.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from shimctl.errors import FailedPrecondition, InvalidArgument, Unsafe
from shimctl.faults import checkpoint
from shimctl.node.mounts import mount_points_under

# Bundle files are tiny; a bigger one is junk and is not read whole.
MAX_SMALL_FILE = 64 * 1024


def is_within(path: Path, top: Path) -> bool:
    """True if `path` (normalised, not resolved) is `top` or below it."""
    p = os.path.normpath(path)
    t = os.path.normpath(top)
    return p == t or p.startswith(t.rstrip("/") + "/")


def read_small(path: str | Path, *, limit: int = MAX_SMALL_FILE) -> bytes:
    """Read a regular file without following a final symlink; refuse files over `limit`.

    FileNotFoundError passes through; other problems raise InvalidArgument naming the file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise
        if err.errno == errno.ELOOP:
            raise Unsafe(f"{path} is a symlink; shimctl does not follow it") from None
        raise InvalidArgument(f"cannot read {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"{path} is not a regular file")
        if st.st_size > limit:
            raise InvalidArgument(f"{path} is {st.st_size} bytes, more than the {limit} expected")
        data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise InvalidArgument(f"{path} is larger than the {limit} bytes expected")
        return data
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int, *, exclusive_temp: bool = False) -> None:
    """Write `data` to `path` through `.<name>` + rename, with `mode` exactly.

    With exclusive_temp the temp file is created O_EXCL, as containerd's address writer does:
    a stale temp file then is an error rather than silently replaced.
    """
    tmp = path.parent / f".{path.name}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    flags |= os.O_EXCL if exclusive_temp else os.O_TRUNC
    try:
        fd = os.open(tmp, flags, mode)
    except FileExistsError:
        raise FailedPrecondition(
            f"{tmp} exists (left by an interrupted write)",
            hint=f"remove {tmp} if no shim is starting in that bundle",
        ) from None
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        # Never leave the temp file: for the address it would block every later write.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def mkdir_mode(path: Path, mode: int, *, exist_ok: bool) -> None:
    """mkdir with an exact mode (chmod after, so the umask does not matter)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not exist_ok:
            raise
        if not path.is_dir() or path.is_symlink():
            raise Unsafe(f"{path} exists and is not a plain directory") from None
        return
    os.chmod(path, mode)


def makedirs_mode(path: Path, mode: int) -> None:
    """mkdir -p giving each directory it creates exactly `mode`, whatever the umask (the
    manager's plugin dirs are 0711); existing ones are left as they are."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        mkdir_mode(d, mode, exist_ok=True)


def _refuse_links_below(path: Path, within: Path) -> None:
    """Refuse `path` if a directory between `within` and it is a symlink: the path would then
    lead outside `within` although it reads as inside (e.g. a symlinked namespace dir)."""
    top = os.path.normpath(within)
    rel = os.path.relpath(os.path.normpath(path), top)
    current = top
    for part in Path(rel).parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise Unsafe(f"refusing to remove {path}: {current} is a symlink")


def remove_tree(path: Path, *, within: Path) -> None:
    """rm -rf `path`, refusing anything outside `within`, symlinks (also between `within` and
    `path`), and trees holding mounts."""
    if not is_within(path, within) or os.path.normpath(path) == os.path.normpath(within):
        raise Unsafe(f"refusing to remove {path}: it is not inside {within}")
    _refuse_links_below(path, within)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise Unsafe(f"refusing to remove {path}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    mounts = mount_points_under(path)
    if mounts:
        raise FailedPrecondition(
            f"refusing to remove {path}: {mounts[0]} is still mounted",
            hint=f"unmount {mounts[0]} first",
        )
    # rmtree removes symlinks inside the tree without following them (fd-based on Linux).
    shutil.rmtree(path)


def atomic_delete(path: Path, *, within: Path) -> None:
    """Rename `path` to `.<name>` beside it, then remove that: a half-removed dir never keeps
    its live name. A stale `.<name>` from an interrupted delete is removed first."""
    if not is_within(path, within) or os.path.normpath(path) == os.path.normpath(within):
        raise Unsafe(f"refusing to remove {path}: it is not inside {within}")
    _refuse_links_below(path, within)
    hidden = path.parent / f".{path.name}"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise Unsafe(f"refusing to remove {path}: it is a symlink")
    try:
        os.rename(path, hidden)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise
        remove_tree(hidden, within=within)
        os.rename(path, hidden)
    checkpoint("bundle:renamed")
    remove_tree(hidden, within=within)
