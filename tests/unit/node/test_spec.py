"""OCI spec helpers (shimctl.node.spec): the default spec's cgroup, and the one reader of a
bundle's annotations that grouping and sandbox detection use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shimctl.node.spec import (
    CRI_CONTAINER_TYPE,
    CRI_SANDBOX_ID,
    GROUP_ANNOTATION,
    MAX_SPEC_BYTES,
    bundle_annotations,
    default_spec,
    marks_sandbox,
    shim_group,
)


def _bundle(tmp_path: Path, doc: object) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    (bundle / "config.json").write_text(json.dumps(doc))
    return bundle


# -- default spec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "id", "cgroup"),
    [
        ("default", "c1", "/default/c1"),
        ("k8s.io", "c1", "/k8s.io/c1"),
        ("a", "b", "/a/b"),
    ],
)
def test_default_spec_cgroup_is_namespaced(namespace: str, id: str, cgroup: str) -> None:
    """As ctr's default spec: path.Join("/", ns, id) (containerd 301026e5 pkg/oci/spec.go)."""
    assert default_spec(namespace=namespace, id=id)["linux"]["cgroupsPath"] == cgroup


def test_same_id_in_two_namespaces_gets_two_cgroups() -> None:
    a = default_spec(namespace="a", id="c1")["linux"]["cgroupsPath"]
    b = default_spec(namespace="b", id="c1")["linux"]["cgroupsPath"]
    assert a != b


def test_default_spec_without_a_task_leaves_the_cgroup_to_runc() -> None:
    assert "cgroupsPath" not in default_spec()["linux"]
    assert default_spec(["/bin/true"])["process"]["args"] == ["/bin/true"]


# -- annotations -------------------------------------------------------------------------------


def test_bundle_annotations_reads_string_annotations(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, {"annotations": {"a": "1", "n": 2, "b": "x"}})
    assert bundle_annotations(bundle) == {"a": "1", "b": "x"}
    assert bundle_annotations(str(bundle)) == {"a": "1", "b": "x"}


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[1, 2]", b'{"annotations": "no"}', b'{"annotations": null}', b"\xff"],
)
def test_bundle_annotations_of_junk_is_empty(tmp_path: Path, content: bytes) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "config.json").write_bytes(content)
    assert bundle_annotations(bundle) == {}


def test_bundle_annotations_missing_or_oversized_or_linked(tmp_path: Path) -> None:
    assert bundle_annotations(tmp_path / "nowhere") == {}
    big = tmp_path / "big"
    big.mkdir()
    pad = "x" * MAX_SPEC_BYTES
    (big / "config.json").write_text(json.dumps({"annotations": {"a": "1"}, "pad": pad}))
    assert bundle_annotations(big) == {}
    real = _bundle(tmp_path, {"annotations": {"a": "1"}})
    linked = tmp_path / "linked"
    linked.mkdir()
    os.symlink(real / "config.json", linked / "config.json")
    assert bundle_annotations(linked) == {}  # never followed


@pytest.mark.parametrize(
    ("annotations", "id", "sandbox"),
    [
        ({CRI_CONTAINER_TYPE: "sandbox"}, "pod", True),
        ({CRI_CONTAINER_TYPE: "container", CRI_SANDBOX_ID: "pod"}, "c1", False),
        ({CRI_SANDBOX_ID: "pod"}, "pod", True),
        ({}, "c1", False),
    ],
)
def test_marks_sandbox(annotations: dict[str, str], id: str, sandbox: bool) -> None:
    assert marks_sandbox(annotations, id) is sandbox


@pytest.mark.parametrize(
    ("annotations", "key"),
    [
        ({GROUP_ANNOTATION: "grp", CRI_SANDBOX_ID: "pod"}, "grp"),
        ({CRI_SANDBOX_ID: "pod"}, "pod"),
        ({GROUP_ANNOTATION: "", CRI_SANDBOX_ID: "pod"}, "pod"),
        ({}, "c1"),
    ],
)
def test_shim_group(annotations: dict[str, str], key: str) -> None:
    assert shim_group(annotations, "c1") == key
