"""The runc-state finder over crafted trees: only state provably of this state dir's bundles
and whose bundle is gone is a finding; odd, hostile or foreign files are passed over."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shimctl.models.findings import Kind
from shimctl.reconcile.evidence import BundleEvidence, Leftover
from shimctl.reconcile.runc_state import orphan_runc_states
from shimctl.settings import Settings

NS = "default"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")
    (s.task_state / NS).mkdir(parents=True)
    return s


def _sibling(settings: Settings, runc_root: Path) -> BundleEvidence:
    """A present bundle whose options.json names the runc root (as the runc shim writes)."""
    path = settings.task_state / NS / "sibling"
    path.mkdir()
    (path / "options.json").write_text(json.dumps({"root": str(runc_root)}))
    return BundleEvidence(NS, "sibling", path, 0.0, entries=["options.json"])


def _state(runc_root: Path, id: str, bundle: str, **extra: object) -> Path:
    d = runc_root / NS / id
    d.mkdir(parents=True)
    doc = {"init_process_pid": 0, "config": {"labels": [f"bundle={bundle}"]}, **extra}
    (d / "state.json").write_text(json.dumps(doc))
    return d


def _found(settings: Settings, runc_root: Path) -> dict[str, Leftover]:
    sibling = _sibling(settings, runc_root)
    found = orphan_runc_states(settings, [sibling], [NS], now=1e10)
    return {left.item.id: left for left in found}


def test_state_of_a_gone_bundle_of_this_state_dir(settings: Settings, tmp_path: Path) -> None:
    runc_root = tmp_path / "runc"
    _state(runc_root, "gone", str(settings.task_state / NS / "gone"))
    (left,) = _found(settings, runc_root).values()
    assert left.kind == Kind.ORPHAN_RUNC_STATE and left.garbage


@pytest.mark.parametrize(
    "case",
    ["foreign bundle", "bundle present", "no label", "not json", "symlink", "huge", "bad id"],
)
def test_what_is_not_a_finding(settings: Settings, tmp_path: Path, case: str) -> None:
    runc_root = tmp_path / "runc"
    own = str(settings.task_state / NS / "x")
    if case == "foreign bundle":
        _state(runc_root, "x", str(tmp_path / "other" / NS / "x"))
    elif case == "bundle present":
        _state(runc_root, "x", own)
        (settings.task_state / NS / "x").mkdir()
    elif case == "no label":
        d = _state(runc_root, "x", own)
        (d / "state.json").write_text(json.dumps({"config": {"labels": ["a=b"]}}))
    elif case == "not json":
        d = _state(runc_root, "x", own)
        (d / "state.json").write_bytes(b"\x00\xff garbage")
    elif case == "symlink":
        d = _state(runc_root, "x", own)
        target = tmp_path / "elsewhere.json"
        (d / "state.json").rename(target)
        os.symlink(target, d / "state.json")
    elif case == "huge":
        d = _state(runc_root, "x", own)
        with open(d / "state.json", "r+b") as f:
            f.truncate(64 << 20)
    else:
        _state(runc_root, "bad..id", str(settings.task_state / NS / "bad..id"))
    assert _found(settings, runc_root) == {}
