"""read_bundle over crafted bundles: a CRI member's sandbox from its annotations when there is
no `sandbox` file (containerd 1.6/1.7), a member's runtime from its sandbox's bundle (2.x),
and the container process a dead shim left running (init.pid)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shimctl.reconcile.evidence import BundleEvidence, live_container_pid, read_bundle
from shimctl.settings import Settings

NS = "k8s.io"
RUNC = "/usr/bin/containerd-shim-runc-v2"
SANDBOX_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path / "root", state=tmp_path / "state", address="/none")


def make(settings: Settings, id: str, annotations: dict[str, str], **files: str) -> Path:
    path = settings.task_state / NS / id
    path.mkdir(parents=True)
    spec = {"ociVersion": "1.0.2", "annotations": annotations}
    (path / "config.json").write_text(json.dumps(spec))
    for name, text in files.items():
        (path / name.replace("_", "-")).write_text(text)
    return path


def read(settings: Settings, id: str) -> BundleEvidence:
    return read_bundle(settings, NS, id, time.time(), {})


def member(sandbox: str) -> dict[str, str]:
    return {SANDBOX_TYPE: "container", SANDBOX_ID: sandbox}


def test_a_member_without_sandbox_file_gets_its_pod_from_the_annotations(
    settings: Settings,
) -> None:
    make(settings, "sb1", {SANDBOX_TYPE: "sandbox", SANDBOX_ID: "sb1"}, shim_binary_path=RUNC)
    make(settings, "c1", member("sb1"), shim_binary_path=RUNC)  # 1.6/1.7: no sandbox file
    make(settings, "plain1", {}, shim_binary_path=RUNC)  # Docker's: no CRI annotations
    make(settings, "c2", member("sb1"), sandbox="sb-file", shim_binary_path=RUNC)

    assert read(settings, "c1").sandbox_of == "sb1"
    assert read(settings, "c1").item().sandbox == "sb1"
    assert read(settings, "sb1").sandbox_of is None  # the sandbox is no member of itself
    assert read(settings, "plain1").sandbox_of is None
    assert read(settings, "c2").sandbox_of == "sb-file"  # the file containerd wrote wins


@pytest.mark.parametrize(
    "annotations",
    [
        {SANDBOX_ID: "sb1"},  # no container type
        {SANDBOX_TYPE: "sandbox", SANDBOX_ID: "sb1"},
        {SANDBOX_TYPE: "container", SANDBOX_ID: "../sb1"},  # not an identifier
        {SANDBOX_TYPE: "container", SANDBOX_ID: ""},
    ],
)
def test_annotations_that_do_not_name_a_pod_are_ignored(
    settings: Settings, annotations: dict[str, str]
) -> None:
    make(settings, "c1", annotations, shim_binary_path=RUNC)
    ev = read(settings, "c1")
    assert ev.sandbox_of is None and ev.unsafe is None


def test_a_member_without_shim_binary_path_uses_its_sandboxs(settings: Settings) -> None:
    make(settings, "sb1", {SANDBOX_TYPE: "sandbox", SANDBOX_ID: "sb1"}, shim_binary_path=RUNC)
    make(settings, "c1", member("sb1"), sandbox="sb1")  # 2.x: sandbox file, no binary
    make(settings, "c2", member("sb1"))  # annotations only
    make(settings, "orphan1", member("gone"))  # its sandbox bundle is gone

    for id in ("c1", "c2"):
        ev = read(settings, id)
        assert (ev.runtime, ev.item().runtime) == (RUNC, RUNC), id
    gone = read(settings, "orphan1")
    assert gone.runtime is None and gone.runtime_error == "no shim-binary-path"


def test_a_sandbox_bundle_that_is_a_link_lends_no_runtime(
    settings: Settings, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "shim-binary-path").write_text("/tmp/evil")
    make(settings, "c1", member("sb1"))
    (settings.task_state / NS / "sb1").symlink_to(elsewhere)
    assert read(settings, "c1").runtime is None


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_shims_container_process_is_seen_from_init_pid(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    pid_file = tmp_path / "init.pid"
    pid_file.write_text(str(sleeper.pid))
    assert live_container_pid(tmp_path) == sleeper.pid
    # A file written before the process started names an earlier process (a reused PID).
    os.utime(pid_file, (0, time.time() - 3600))
    assert live_container_pid(tmp_path) is None


def test_no_live_container_process_without_a_usable_init_pid(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    assert live_container_pid(tmp_path) is None  # no file
    for junk in ("", "abc", "-1", "0"):
        (tmp_path / "init.pid").write_text(junk)
        assert live_container_pid(tmp_path) is None, junk
    (tmp_path / "init.pid").write_text(str(sleeper.pid))
    sleeper.kill()
    sleeper.wait()
    assert live_container_pid(tmp_path) is None  # gone
