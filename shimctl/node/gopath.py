"""Go's path/filepath Join and Clean on Unix, exactly: a shim names its socket after
sha256(filepath.Join(address, namespace, id)) and ctr names a task's cgroup
filepath.Join("/", namespace, id), so shimctl must form the same strings byte for byte.

posixpath.normpath is not Clean: POSIX lets a path keep a leading `//` (normpath("//run/x")
is "//run/x"), while Go reduces every run of slashes to one ("/run/x"). Rules:
https://pkg.go.dev/path/filepath#Clean
"""

from __future__ import annotations


def go_clean(path: str) -> str:
    """filepath.Clean: one slash between elements, no `.`, each `..` eats the element before
    it, a `..` right under the root is dropped, no trailing slash; "" becomes "."."""
    rooted = path.startswith("/")
    kept: list[str] = []
    for element in path.split("/"):
        if element in ("", "."):
            continue
        if element != "..":
            kept.append(element)
        elif kept and kept[-1] != "..":
            kept.pop()
        elif not rooted:
            kept.append("..")  # a relative path may climb; the root has nothing above it
    body = "/".join(kept)
    if rooted:
        return "/" + body
    return body or "."


def go_join(*elements: str) -> str:
    """filepath.Join: the non-empty elements joined with "/" and cleaned; "" if there are none."""
    present = [e for e in elements if e]
    return go_clean("/".join(present)) if present else ""
