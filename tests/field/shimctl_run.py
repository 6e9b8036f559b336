"""Running shimctl over a field test's node, and reading its JSON reports."""

from __future__ import annotations

import json
from typing import Any

from tests.support.findings import by_id
from tests.support.helpers import Node, run_cli


def gc(node: Node, *extra: str) -> dict[str, Any]:
    """``shimctl gc --min-age 0 --json``; asserts exit 0; returns ``result``."""
    proc = run_cli(node, "gc", "--min-age", "0", "--json", *extra, timeout=120)
    assert proc.returncode == 0, f"gc exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return dict(json.loads(proc.stdout)["result"])


def findings(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """id -> finding of a gc or list result."""
    return by_id(result)


def acted(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The findings gc did something to (an outcome other than none), stale sockets aside:
    /run/containerd/s is shared by every containerd on the machine (the shim hard-codes it),
    so a node-wide gc also sees the sockets other tests' dead shims left there."""
    return [
        f
        for f in result["findings"]
        if f.get("outcome") is not None and f["kind"] != "stale-socket"
    ]


def listing(node: Node) -> dict[str, dict[str, Any]]:
    """``shimctl list --json``: id -> finding."""
    proc = run_cli(node, "list", "--json", timeout=120)
    assert proc.returncode == 0, f"list exited {proc.returncode}:\n{proc.stderr}"
    return findings(json.loads(proc.stdout)["result"])


def summary(result: dict[str, Any]) -> dict[str, tuple[str, str, str | None]]:
    """id[:12] -> (kind, action, outcome): a gc result, short enough for a failure message."""
    return {f["id"][:12]: (f["kind"], f["action"], f["outcome"]) for f in result["findings"]}
