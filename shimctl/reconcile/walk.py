"""Walk STATE and ROOT: the namespaces in scope, their bundle dirs, and what lies beside them
(work dirs with no bundle, hidden dirs left by an interrupted atomic delete, links, names no
containerd made). Lists directories; reads no file, probes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from shimctl.errors import FailedPrecondition
from shimctl.models.findings import Kind
from shimctl.node import identifiers
from shimctl.reconcile.evidence import Item, Leftover, age_of
from shimctl.settings import Settings


class Walk(NamedTuple):
    bundle_dirs: list[tuple[str, str]]  # (namespace, id) of every bundle dir to read
    leftovers: list[Leftover]


def subdirs(path: Path) -> list[os.DirEntry[str]]:
    """Entries of `path`, best effort: a missing or unreadable dir has none (callers that must
    tell the difference check `unreadable` first)."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def unreadable(path: Path) -> str | None:
    """Why the directory `path` cannot be listed, or None (also when it does not exist)."""
    try:
        with os.scandir(path):
            return None
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        return err.strerror or str(err)


def namespaces(settings: Settings) -> list[str]:
    """Namespaces to cover: the one given with -n, else every plain dir in STATE and ROOT."""
    if settings.namespace_given:
        return [settings.namespace]
    names: set[str] = set()
    for top in (settings.task_state, settings.task_root):
        why = unreadable(top)
        if why is not None:
            raise FailedPrecondition(
                f"cannot read {top}: {why}",
                hint="run shimctl as root, or name one namespace with -n",
            )
        for entry in subdirs(top):
            plain_or_link = entry.is_dir(follow_symlinks=False) or entry.is_symlink()
            if plain_or_link and not entry.name.startswith("."):
                names.add(entry.name)
    return sorted(names)


def walk(settings: Settings, scope: list[str], now: float) -> Walk:
    """The bundle dirs of every namespace in `scope`, and the leftovers beside them."""
    found = Walk([], [])
    for ns in scope:
        _walk_namespace(settings, ns, now, found)
    return found


def _unsafe(ns: str, id: str, path: str, reason: str) -> Leftover:
    return Leftover(Item(ns, id, path), Kind.UNSAFE, reason, garbage=False)


def _walk_namespace(settings: Settings, ns: str, now: float, found: Walk) -> None:
    ns_state = settings.task_state / ns
    ns_root = settings.task_root / ns
    leftovers = found.leftovers
    linked = [d for d in (ns_state, ns_root) if os.path.islink(d)]
    if linked:
        why = f"namespace dir {linked[0]} is a symlink; not followed, skipped"
        leftovers.append(_unsafe(ns, "", str(linked[0]), why))
        return
    if not identifiers.is_valid(ns):
        why = f"namespace dir {ns!r} is not a valid identifier; skipped"
        leftovers.append(_unsafe(ns, "", str(ns_state), why))
        return
    closed = [(d, err) for d in (ns_state, ns_root) if (err := unreadable(d))]
    if closed:
        where, err = closed[0]
        leftovers.append(
            _unsafe(ns, "", str(where), f"namespace dir {where} is unreadable ({err}); skipped")
        )
        return
    names: set[str] = set()
    for entry in subdirs(ns_state):
        if entry.is_symlink():
            why = f"bundle is a symlink to {os.readlink(entry.path)}; not followed"
            leftovers.append(_unsafe(ns, entry.name, entry.path, why))
            names.add(entry.name)
            continue
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith("."):
            leftovers.append(_hidden(ns, entry.name, Path(entry.path), now))
            continue
        names.add(entry.name)
        found.bundle_dirs.append((ns, entry.name))
    for entry in subdirs(ns_root):
        if entry.name in names:
            continue
        path = Path(entry.path)
        if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
            leftovers.append(_hidden(ns, entry.name, path, now))
            continue
        if not identifiers.is_valid(entry.name):
            leftovers.append(_invalid_name(ns, entry.name, path, "work dir"))
            continue
        item = Item(ns, entry.name, entry.path, age_seconds=age_of(path, now))
        leftovers.append(Leftover(item, Kind.ORPHAN_WORKDIR, "work dir with no bundle", True))


def _invalid_name(ns: str, name: str, path: Path, what: str) -> Leftover:
    why = (
        f"{what} name {name!r} is not a valid containerd identifier: not made by containerd "
        "or shimctl; left alone"
    )
    return _unsafe(ns, name, str(path), why)


def _hidden(ns: str, name: str, path: Path, now: float) -> Leftover:
    if not identifiers.is_valid(name[1:]):
        # Only `.<id>` is an atomic delete's leftover; `...` or `.-x` is something else.
        return _invalid_name(ns, name, path, "hidden dir")
    item = Item(ns, name, str(path), age_seconds=age_of(path, now))
    return Leftover(item, Kind.STALE_HIDDEN, "left by an interrupted atomic delete", True)
