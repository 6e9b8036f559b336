"""A delete verb cut short by its timeout keeps the bundle: the container it may have left half
deleted (a `runc init`, runc state, a cgroup) stays visible to the next run, which retries."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shimctl.errors import ExitCode
from tests.support.findings import by_id
from tests.support.helpers import Node, run_cli


def _dead_bundle(node: Node, task_id: str, shim: Path) -> Path:
    bundle = node.bundle(task_id)
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2"}))
    (bundle / "shim-binary-path").write_text(str(shim))
    # A socket nobody listens on (none exists): the shim is dead.
    (bundle / "address").write_text(f"unix://{node.base}/gone-{task_id}.sock")
    node.workdir(task_id).mkdir(parents=True)
    return bundle


def _shim(node: Node, delete_verb: str) -> Path:
    """A shim binary whose `delete` verb runs `delete_verb` (exec'd: no child outlives it)."""
    path = node.base / "containerd-shim-slow-v2"
    path.write_text(f"#!/bin/sh\nexec {delete_verb}\n")
    os.chmod(path, 0o755)
    return path


def test_a_timed_out_delete_verb_keeps_the_bundle(node: Node) -> None:
    bundle = _dead_bundle(node, "slow", _shim(node, "sleep 30"))
    gc = run_cli(node, "--json", "--timeout", "1", "gc", "--min-age", "0")
    assert gc.returncode == ExitCode.ACTIONS_FAILED, gc.stdout + gc.stderr
    found = by_id(gc)["slow"]
    assert (found["kind"], found["outcome"]) == ("dead", "failed"), found
    assert "bundle kept for the next run" in (found["error"] or ""), found
    assert bundle.is_dir() and node.workdir("slow").is_dir()


def test_a_failing_delete_verb_is_only_noted(node: Node) -> None:
    """The runc shim's verb fails for a task never created: noted, and the bundle goes."""
    bundle = _dead_bundle(node, "fails", _shim(node, "false"))
    gc = run_cli(node, "--json", "--timeout", "5", "gc", "--min-age", "0")
    assert gc.returncode == ExitCode.OK, gc.stdout + gc.stderr
    found = by_id(gc)["fails"]
    assert (found["kind"], found["outcome"]) == ("dead", "done"), found
    assert any("delete verb failed" in n for n in found["notes"]), found
    assert not bundle.exists()
