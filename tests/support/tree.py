"""A snapshot of a file tree, to prove a run changed nothing: the one tests share."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def snapshot(*tops: Path) -> dict[str, tuple[str, ...]]:
    """Every path under `tops` with its type, mode and content (digest) or link target."""
    out: dict[str, tuple[str, ...]] = {}

    def one(p: str) -> None:
        st = os.lstat(p)
        mode = oct(stat.S_IMODE(st.st_mode))
        if stat.S_ISLNK(st.st_mode):
            out[p] = ("link", os.readlink(p))
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                out[p] = ("file", mode, hashlib.sha256(f.read()).hexdigest())
        elif stat.S_ISDIR(st.st_mode):
            out[p] = ("dir", mode)
        else:
            out[p] = ("other", mode, str(stat.S_IFMT(st.st_mode)))

    for top in tops:
        if not os.path.lexists(top):
            continue
        one(str(top))
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                one(os.path.join(dirpath, name))
    return out
