"""Bundle create/delete on disk (layout.md §4, §6) and the fsutil primitives under them.

No shim processes. Bind mounts are real (the suite runs as root); every mount a test makes is
undone by the `mounts` fixture.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shimctl.errors import AlreadyExists, ExitCode, FailedPrecondition, InvalidArgument, Unsafe
from shimctl.node import fs
from shimctl.node.bundle import Bundle
from shimctl.node.mounts import mount_points_under, unmount_all
from shimctl.node.spec import default_spec, encode_spec, remapped_gid
from shimctl.settings import Settings
from tests.support.helpers import Node
from tests.support.tree import snapshot

NS = "default"
SPEC = encode_spec(default_spec())


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def umask077() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def settings(node: Node) -> Settings:
    return Settings(root=node.root, state=node.state, address=node.address)


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    """Files outside root and state that nothing may ever delete."""
    p = tmp_path / "precious"
    (p / "sub").mkdir(parents=True)
    (p / "keep.txt").write_text("do not delete")
    (p / "sub" / "deep.txt").write_text("nor this")
    return p


def _intact(precious: Path) -> bool:
    return (precious / "keep.txt").read_text() == "do not delete" and (
        precious / "sub" / "deep.txt"
    ).read_text() == "nor this"


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Callable[[Path, Path], None]]:
    """`bind(src, dst)`; at teardown every mount point under tmp_path is lazily unmounted."""

    def bind(src: Path, dst: Path) -> None:
        subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)

    yield bind
    # Parsed here, not with fsutil (the code under test), so a bug there cannot leak a mount.
    for point in reversed(_mounts_below(tmp_path)):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _mounts_below(top: Path) -> list[str]:
    prefix = os.fsencode(os.path.realpath(top)) + b"/"
    points = []
    for line in Path("/proc/self/mountinfo").read_bytes().splitlines():
        raw = line.split(b" ")[4]
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), raw)
        if point.startswith(prefix):
            points.append(os.fsdecode(point))
    return points


def _create(settings: Settings, id: str = "c1", spec: bytes = SPEC) -> Bundle:
    return Bundle.create(settings.task_state, settings.task_root, NS, id, spec, None)


# -- Bundle.create ------------------------------------------------------------------------------


def test_create_layout_and_modes_under_umask_077(
    settings: Settings, node: Node, umask077: None
) -> None:
    b = _create(settings)
    assert b.path == node.bundle("c1")
    assert b.work == node.workdir("c1")
    for d in (node.task_state, node.task_root, node.task_state / NS, node.task_root / NS):
        assert _mode(d) == 0o711, d
    assert stat.S_ISDIR(os.lstat(b.path).st_mode)
    assert _mode(b.path) == 0o700
    assert _mode(b.path / "rootfs") == 0o711
    assert _mode(b.work) == 0o711
    assert os.listdir(b.work) == []
    assert os.listdir(b.path / "rootfs") == []
    assert os.readlink(b.path / "work") == str(node.workdir("c1"))  # absolute target
    assert (b.path / "config.json").read_bytes() == SPEC
    assert _mode(b.path / "config.json") == 0o644
    assert sorted(os.listdir(b.path)) == ["config.json", "rootfs", "work"]
    assert os.listdir(node.task_state / NS) == ["c1"]


def test_create_writes_the_spec_bytes_exactly(settings: Settings) -> None:
    spec = b'{"ociVersion": "1.0.2",\n "x": "\xc3\xa9"}\n'
    b = _create(settings, spec=spec)
    assert (b.path / "config.json").read_bytes() == spec


def test_create_keeps_existing_namespace_dir_modes(settings: Settings, node: Node) -> None:
    ns_dir = node.task_state / NS
    ns_dir.mkdir(parents=True)
    ns_dir.chmod(0o755)
    _create(settings)
    assert _mode(ns_dir) == 0o755


def test_create_wipes_a_stale_work_dir(settings: Settings, node: Node) -> None:
    stale = node.workdir("c1")
    (stale / "criu").mkdir(parents=True)
    (stale / "criu" / "dump.img").write_text("old")
    stale.chmod(0o700)
    b = _create(settings)
    assert os.listdir(b.work) == []
    assert _mode(b.work) == 0o711


def test_create_existing_bundle_is_already_exists_and_untouched(
    settings: Settings, node: Node
) -> None:
    b = _create(settings)
    (b.path / "address").write_text("unix:///run/containerd/s/x")
    (b.work / "criu-state").write_text("keep")
    before_state, before_root = snapshot(node.task_state), snapshot(node.task_root)
    with pytest.raises(AlreadyExists) as info:
        _create(settings, spec=b"{}")
    assert str(info.value).startswith(f"bundle {b.path} already exists: task 'c1'")
    assert info.value.exit_code == ExitCode.ALREADY_EXISTS
    assert snapshot(node.task_state) == before_state
    assert snapshot(node.task_root) == before_root


def test_create_over_a_symlinked_bundle_name_is_already_exists(
    settings: Settings, node: Node, precious: Path
) -> None:
    (node.task_state / NS).mkdir(parents=True)
    os.symlink(precious, node.bundle("c1"))
    with pytest.raises(AlreadyExists):
        _create(settings)
    assert os.readlink(node.bundle("c1")) == str(precious)
    assert _intact(precious)
    assert sorted(os.listdir(precious)) == ["keep.txt", "sub"]


def test_create_with_remapped_gid(settings: Settings, umask077: None) -> None:
    spec = default_spec()
    spec["linux"]["gidMappings"] = [
        {"containerID": 1, "hostID": 500, "size": 10},
        {"containerID": 0, "hostID": 100000, "size": 65536},
    ]
    gid = remapped_gid(spec)
    assert gid == 100000
    b = Bundle.create(
        settings.task_state, settings.task_root, NS, "c1", json.dumps(spec).encode(), gid
    )
    st = os.lstat(b.path)
    assert st.st_gid == 100000
    assert st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o710
    assert _mode(b.path / "rootfs") == 0o711


def test_create_failure_removes_what_it_made(
    settings: Settings, node: Node, precious: Path
) -> None:
    # A stale work "dir" that is a symlink out of ROOT is refused, and the new bundle goes.
    (node.task_root / NS).mkdir(parents=True)
    os.symlink(precious, node.workdir("c1"))
    with pytest.raises(Unsafe):
        _create(settings)
    assert not os.path.lexists(node.bundle("c1"))
    assert not os.path.lexists(node.task_state / NS / ".c1")
    assert os.readlink(node.workdir("c1")) == str(precious)
    assert _intact(precious)


# -- remapped_gid (bundle_linux.go) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("linux", "gid"),
    [
        (None, None),
        ({}, None),
        ({"gidMappings": []}, None),
        ({"gidMappings": [{"containerID": 0, "hostID": 0, "size": 1}]}, None),
        ({"gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, 1000),
        ({"GIDMappings": [{"ContainerId": 0, "HOSTID": 7}]}, 7),  # Go matches keys by case
        ({"gidMappings": [{"hostID": 9}]}, 9),  # a missing containerID is 0
        ({"gidMappings": [None, {"containerID": 0, "hostID": 9}]}, None),  # null = zeros
        ({"gidMappings": [{"containerID": 0, "hostID": 5}, {"containerID": 0, "hostID": 6}]}, 5),
        ({"gidMappings": [{"containerID": 0, "hostID": 1, "hostid": 2}]}, 2),  # last key wins
    ],
)
def test_remapped_gid(linux: object, gid: int | None) -> None:
    spec: dict[str, object] = {"ociVersion": "1.0.2"}
    if linux is not None:
        spec["linux"] = linux
    assert remapped_gid(spec) == gid


@pytest.mark.parametrize(
    "linux",
    [
        "x",
        {"gidMappings": {"containerID": 0}},
        {"gidMappings": ["x"]},
        {"gidMappings": [{"containerID": 0, "hostID": True}]},
        {"gidMappings": [{"containerID": 0, "hostID": -1}]},
        {"gidMappings": [{"containerID": 0, "hostID": 2**32}]},
        {"gidMappings": [{"containerID": 0, "hostID": 1000.0}]},
        {"gidMappings": [{"containerID": "0", "hostID": 1000}]},
    ],
)
def test_remapped_gid_wrong_types(linux: object) -> None:
    with pytest.raises(InvalidArgument, match=r"^spec: linux"):
        remapped_gid({"linux": linux})


# -- Bundle.delete ------------------------------------------------------------------------------


def test_delete_removes_bundle_and_work_dir(settings: Settings, node: Node) -> None:
    b = _create(settings)
    (b.path / "address").write_text("unix:///x")
    fifo = b.path / "log"
    os.mkfifo(fifo, 0o700)
    (b.path / "rootfs").chmod(0o711)
    b.delete()
    assert os.listdir(node.task_state / NS) == []
    assert os.listdir(node.task_root / NS) == []
    b.delete()  # a second delete of nothing is fine


def test_delete_renames_before_removing(
    settings: Settings, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interrupt the removal: the live name must already be gone, only `.c1` remains.
    b = _create(settings)
    (b.path / "address").write_text("unix:///x")

    def boom(path: Path, *, within: Path) -> None:
        raise OSError(errno.EIO, "interrupted")

    monkeypatch.setattr(fs, "remove_tree", boom)
    # Both removals fail: the error names both, as containerd's does.
    with pytest.raises(FailedPrecondition, match=r"failed to remove both.*interrupted"):
        b.delete()
    assert not os.path.lexists(node.bundle("c1"))
    assert (node.task_state / NS / ".c1" / "address").read_text() == "unix:///x"
    monkeypatch.undo()
    # The stale hidden dir does not block deleting a new bundle with the same id.
    b2 = _create(settings)
    b2.delete()
    assert os.listdir(node.task_state / NS) == []
    assert os.listdir(node.task_root / NS) == []


def test_stale_non_empty_hidden_dirs_do_not_block_delete(settings: Settings, node: Node) -> None:
    b = _create(settings)
    for top in (node.task_state / NS, node.task_root / NS):
        hidden = top / ".c1"
        (hidden / "deeper").mkdir(parents=True)
        (hidden / "deeper" / "f").write_text("stale")
    b.delete()
    assert os.listdir(node.task_state / NS) == []
    assert os.listdir(node.task_root / NS) == []


@pytest.mark.parametrize("how", ["absolute", "dotdot", "relative", "other-namespace"])
def test_delete_refuses_a_work_link_out_of_root(
    settings: Settings, node: Node, precious: Path, how: str
) -> None:
    b = _create(settings)
    link = b.path / "work"
    link.unlink()
    target = {
        "absolute": str(precious),
        "dotdot": f"{node.task_root}/{NS}/../../../precious",
        "relative": "../../../../precious",
        "other-namespace": str(node.task_root / "other" / "c1"),
    }[how]
    if how == "other-namespace":
        (node.task_root / "other" / "c1").mkdir(parents=True)
    os.symlink(target, link)
    before_state, before_root = snapshot(node.task_state), snapshot(node.task_root)
    with pytest.raises(Unsafe) as info:
        b.delete()
    assert f"{link} points at {target}" in str(info.value)
    assert info.value.exit_code == ExitCode.UNSAFE
    assert _intact(precious)
    assert sorted(os.listdir(precious)) == ["keep.txt", "sub"]
    assert snapshot(node.task_state) == before_state
    assert snapshot(node.task_root) == before_root


def test_delete_refuses_a_symlinked_rootfs(settings: Settings, node: Node, precious: Path) -> None:
    b = _create(settings)
    (b.path / "rootfs").rmdir()
    os.symlink(precious, b.path / "rootfs")
    before = snapshot(node.task_state)
    with pytest.raises(Unsafe, match="rootfs is a symlink"):
        b.delete()
    assert _intact(precious)
    assert snapshot(node.task_state) == before
    assert b.work.is_dir()


def test_delete_refuses_a_symlinked_bundle(settings: Settings, node: Node, precious: Path) -> None:
    (node.task_state / NS).mkdir(parents=True)
    os.symlink(precious, node.bundle("c1"))
    with pytest.raises(Unsafe, match="is not a directory"):
        Bundle.locate(settings.task_state, settings.task_root, NS, "c1").delete()
    assert os.path.islink(node.bundle("c1"))
    assert _intact(precious)


def test_delete_keeps_a_bundle_with_non_empty_rootfs(settings: Settings, node: Node) -> None:
    b = _create(settings)
    (b.path / "rootfs" / "bin").mkdir()
    (b.path / "rootfs" / "bin" / "sh").write_text("x")
    before_state, before_root = snapshot(node.task_state), snapshot(node.task_root)
    with pytest.raises(FailedPrecondition) as info:
        b.delete()
    assert str(info.value) == f"bundle rootfs {b.path / 'rootfs'} is not empty"
    assert info.value.exit_code == ExitCode.FAILED_PRECONDITION
    assert snapshot(node.task_state) == before_state
    assert snapshot(node.task_root) == before_root


def test_delete_unmounts_rootfs_and_spares_the_mount_source(
    settings: Settings, node: Node, precious: Path, mounts: Callable[[Path, Path], None]
) -> None:
    b = _create(settings)
    rootfs = b.path / "rootfs"
    mounts(precious, rootfs)
    mounts(precious, rootfs)  # stacked: UnmountAll peels every layer
    assert (rootfs / "keep.txt").exists()
    assert mount_points_under(b.path) == [str(rootfs), str(rootfs)]
    b.delete()
    assert not os.path.lexists(b.path)
    assert not os.path.lexists(b.work)
    assert mount_points_under(node.base) == []
    assert _intact(precious)


def test_delete_refuses_to_remove_through_another_mount(
    settings: Settings, node: Node, precious: Path, mounts: Callable[[Path, Path], None]
) -> None:
    b = _create(settings)
    (b.path / "extra").mkdir()
    mounts(precious, b.path / "extra")
    with pytest.raises(FailedPrecondition, match="is still mounted"):
        b.delete()
    assert _intact(precious)
    assert sorted(os.listdir(precious)) == ["keep.txt", "sub"]


def test_delete_refuses_a_work_dir_behind_a_symlinked_namespace(
    settings: Settings, node: Node, precious: Path
) -> None:
    b = _create(settings)
    os.rmdir(b.work)
    os.rmdir(node.task_root / NS)
    os.symlink(precious, node.task_root / NS)
    (precious / "c1").mkdir()
    (precious / "c1" / "mine.txt").write_text("x")
    with pytest.raises(Unsafe, match="is a symlink"):
        b.delete()
    assert (precious / "c1" / "mine.txt").read_text() == "x"
    assert _intact(precious)


def test_delete_without_bundle_removes_the_work_dir(settings: Settings, node: Node) -> None:
    b = _create(settings)
    (b.work / "f").write_text("x")
    for name in ("config.json", "work"):
        (b.path / name).unlink()
    (b.path / "rootfs").rmdir()
    b.path.rmdir()
    Bundle.locate(settings.task_state, settings.task_root, NS, "c1").delete()
    assert not os.path.lexists(b.work)


# -- fs.remove_tree / atomic_delete ---------------------------------------------------------


@pytest.fixture
def top(tmp_path: Path) -> Path:
    t = tmp_path / "top"
    (t / "a" / "b").mkdir(parents=True)
    (t / "a" / "b" / "f").write_text("x")
    return t


def test_remove_tree_removes_without_following_inner_links(top: Path, precious: Path) -> None:
    os.symlink(precious, top / "a" / "link-out")
    os.symlink(precious / "keep.txt", top / "a" / "b" / "file-link")
    fs.remove_tree(top / "a", within=top)
    assert os.listdir(top) == []
    assert _intact(precious)


def test_remove_tree_file_and_missing(top: Path) -> None:
    fs.remove_tree(top / "a" / "b" / "f", within=top)
    assert os.listdir(top / "a" / "b") == []
    fs.remove_tree(top / "missing", within=top)


@pytest.mark.parametrize("rel", ["", ".", "a/../..", "../precious", "/"])
def test_remove_tree_refuses_outside(top: Path, precious: Path, rel: str) -> None:
    path = Path("/") if rel == "/" else Path(f"{top}/{rel}")
    with pytest.raises(Unsafe, match="is not inside"):
        fs.remove_tree(path, within=top)
    assert (top / "a" / "b" / "f").exists()
    assert _intact(precious)


def test_remove_tree_refuses_a_sibling_with_a_common_prefix(tmp_path: Path) -> None:
    (tmp_path / "top-sibling").mkdir()
    with pytest.raises(Unsafe):
        fs.remove_tree(tmp_path / "top-sibling", within=tmp_path / "top")
    assert (tmp_path / "top-sibling").is_dir()


def test_remove_tree_refuses_symlinks(top: Path, precious: Path) -> None:
    os.symlink(precious, top / "link")
    with pytest.raises(Unsafe, match="it is a symlink"):
        fs.remove_tree(top / "link", within=top)
    assert os.path.islink(top / "link")
    assert _intact(precious)


def test_remove_tree_refuses_a_symlinked_dir_between(top: Path, precious: Path) -> None:
    # e.g. ROOT/<ns> -> elsewhere: ROOT/<ns>/<id> reads as inside ROOT but is not.
    os.symlink(precious, top / "ns")
    for remove in (fs.remove_tree, fs.atomic_delete):
        with pytest.raises(Unsafe) as info:
            remove(top / "ns" / "sub", within=top)
        assert (
            str(info.value) == f"refusing to remove {top / 'ns' / 'sub'}: {top / 'ns'} is a symlink"
        )
    assert _intact(precious)
    assert sorted(os.listdir(precious)) == ["keep.txt", "sub"]


def test_remove_tree_refuses_a_tree_holding_a_mount(
    top: Path, precious: Path, mounts: Callable[[Path, Path], None]
) -> None:
    mounts(precious, top / "a" / "b")
    with pytest.raises(FailedPrecondition) as info:
        fs.remove_tree(top / "a", within=top)
    assert str(info.value) == f"refusing to remove {top / 'a'}: {top / 'a' / 'b'} is still mounted"
    assert _intact(precious)
    assert (top / "a" / "b" / "keep.txt").exists()


def test_remove_tree_sees_mounts_through_a_symlinked_ancestor(
    tmp_path: Path, top: Path, precious: Path, mounts: Callable[[Path, Path], None]
) -> None:
    # e.g. --state /var/run/containerd with /var/run -> /run: mountinfo has the real path.
    alias = tmp_path / "alias"
    os.symlink(top, alias)
    mounts(precious, top / "a" / "b")
    with pytest.raises(FailedPrecondition, match="is still mounted"):
        fs.remove_tree(alias / "a", within=alias)
    assert _intact(precious)


def test_mount_points_under_decodes_escapes(
    tmp_path: Path, precious: Path, mounts: Callable[[Path, Path], None]
) -> None:
    odd = tmp_path / "with space\tand tab é"
    odd.mkdir()
    mounts(precious, odd)
    assert mount_points_under(tmp_path) == [str(odd)]
    assert mount_points_under(odd) == [str(odd)]
    assert mount_points_under(tmp_path / "with space") == []


def test_atomic_delete(top: Path) -> None:
    (top / ".a").mkdir()
    (top / ".a" / "stale").write_text("x")
    fs.atomic_delete(top / "a", within=top)
    assert os.listdir(top) == []
    fs.atomic_delete(top / "a", within=top)  # missing is fine


def test_atomic_delete_refuses_the_top_itself(top: Path, tmp_path: Path) -> None:
    for path in (top, Path(f"{top}/."), tmp_path):
        with pytest.raises(Unsafe):
            fs.atomic_delete(path, within=top)
    assert (top / "a" / "b" / "f").exists()
    assert not os.path.lexists(tmp_path / ".top")


def test_atomic_delete_refuses_symlinks(top: Path, precious: Path) -> None:
    os.symlink(precious, top / "link")
    with pytest.raises(Unsafe):
        fs.atomic_delete(top / "link", within=top)
    assert os.path.islink(top / "link")
    assert _intact(precious)


def test_unmount_all(tmp_path: Path, precious: Path, mounts: Callable[[Path, Path], None]) -> None:
    target = tmp_path / "target"
    target.mkdir()
    unmount_all(tmp_path / "missing")
    unmount_all(target)  # not a mount point: fine
    mounts(precious, target)
    link = tmp_path / "link"
    os.symlink(target, link)
    with pytest.raises(Unsafe, match="is a symlink"):
        unmount_all(link)
    assert mount_points_under(target) == [str(target)]
    unmount_all(target)
    assert mount_points_under(tmp_path) == []
    assert os.listdir(target) == []
    assert _intact(precious)


# -- fs.write_atomic / mkdir_mode / is_within -----------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o000, 0o777])
@pytest.mark.parametrize("mode", [0o644, 0o600])
def test_write_atomic_modes_ignore_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        fs.write_atomic(tmp_path / "f", b"data", mode)
        fs.write_atomic(tmp_path / "f", b"new", mode)
    finally:
        os.umask(old)
    assert (tmp_path / "f").read_bytes() == b"new"
    assert _mode(tmp_path / "f") == mode
    assert os.listdir(tmp_path) == ["f"]


def test_write_atomic_replaces_a_symlink_not_its_target(tmp_path: Path, precious: Path) -> None:
    os.symlink(precious / "keep.txt", tmp_path / "f")
    fs.write_atomic(tmp_path / "f", b"mine", 0o600)
    assert not os.path.islink(tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"mine"
    assert _intact(precious)


def test_write_atomic_stale_exclusive_temp(tmp_path: Path) -> None:
    (tmp_path / "address").write_bytes(b"unix:///old")
    (tmp_path / ".address").write_bytes(b"half")
    with pytest.raises(FailedPrecondition) as info:
        fs.write_atomic(tmp_path / "address", b"unix:///new", 0o644, exclusive_temp=True)
    assert str(info.value) == f"{tmp_path / '.address'} exists (left by an interrupted write)"
    assert info.value.hint is not None and str(tmp_path / ".address") in info.value.hint
    assert (tmp_path / "address").read_bytes() == b"unix:///old"
    assert (tmp_path / ".address").read_bytes() == b"half"
    # Without exclusive_temp a stale temp file is simply replaced.
    fs.write_atomic(tmp_path / "address", b"unix:///new", 0o644)
    assert (tmp_path / "address").read_bytes() == b"unix:///new"
    assert os.listdir(tmp_path) == ["address"]


def test_write_atomic_leaves_no_temp_when_rename_fails(tmp_path: Path) -> None:
    (tmp_path / "address" / "x").mkdir(parents=True)
    with pytest.raises(OSError):
        fs.write_atomic(tmp_path / "address", b"a", 0o644, exclusive_temp=True)
    assert not os.path.lexists(tmp_path / ".address")


def test_bundle_writers(settings: Settings, umask077: None) -> None:
    b = _create(settings)
    b.write_address("unix:///run/containerd/s/abc")
    b.write_shim_binary_path("/usr/bin/containerd-shim-runc-v2")
    b.write_sandbox("pod1")
    b.write_bootstrap(b'{"version":3}')
    assert (b.path / "address").read_bytes() == b"unix:///run/containerd/s/abc"
    assert (b.path / "shim-binary-path").read_bytes() == b"/usr/bin/containerd-shim-runc-v2"
    assert (b.path / "sandbox").read_bytes() == b"pod1"
    modes = {n: _mode(b.path / n) for n in ("address", "shim-binary-path", "sandbox")}
    assert modes == {"address": 0o644, "shim-binary-path": 0o600, "sandbox": 0o600}
    (b.path / ".address").write_text("")
    with pytest.raises(FailedPrecondition, match=r"\.address exists"):
        b.write_address("unix:///other")
    assert b.read_text("address") == "unix:///run/containerd/s/abc"


def test_open_log_fifo(settings: Settings, umask077: None) -> None:
    b = _create(settings)
    fd = b.open_log_fifo()
    try:
        st = os.lstat(b.path / "log")
        assert stat.S_ISFIFO(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700
        os.close(b.open_log_fifo())  # an existing fifo is reused
    finally:
        os.close(fd)
    (b.path / "log").unlink()
    (b.path / "log").write_text("not a fifo")
    with pytest.raises(Unsafe, match="is not a fifo"):
        b.open_log_fifo()


def test_mkdir_mode(tmp_path: Path, umask077: None, precious: Path) -> None:
    fs.mkdir_mode(tmp_path / "d", 0o711, exist_ok=False)
    assert _mode(tmp_path / "d") == 0o711
    fs.mkdir_mode(tmp_path / "d", 0o700, exist_ok=True)
    assert _mode(tmp_path / "d") == 0o711  # an existing dir keeps its mode
    with pytest.raises(FileExistsError):
        fs.mkdir_mode(tmp_path / "d", 0o711, exist_ok=False)
    os.symlink(precious, tmp_path / "link")
    with pytest.raises(Unsafe):
        fs.mkdir_mode(tmp_path / "link", 0o711, exist_ok=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(Unsafe):
        fs.mkdir_mode(tmp_path / "file", 0o711, exist_ok=True)


@pytest.mark.parametrize(
    ("path", "top", "inside"),
    [
        ("/a/b", "/a", True),
        ("/a", "/a", True),
        ("/a/", "/a", True),
        ("/a/b/../c", "/a", True),
        ("/a/../b", "/a", False),
        ("/ab", "/a", False),
        ("/", "/a", False),
        ("/x", "/", True),
    ],
)
def test_is_within(path: str, top: str, inside: bool) -> None:
    assert fs.is_within(Path(path), Path(top)) is inside


# -- fs.read_small --------------------------------------------------------------------------


def test_read_small(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc\n")
    assert fs.read_small(tmp_path / "f") == b"abc\n"
    (tmp_path / "exact").write_bytes(b"x" * 10)
    assert fs.read_small(tmp_path / "exact", limit=10) == b"x" * 10
    with pytest.raises(FileNotFoundError):
        fs.read_small(tmp_path / "missing")


def test_read_small_refuses_symlinks(tmp_path: Path, precious: Path) -> None:
    os.symlink(precious / "keep.txt", tmp_path / "link")
    with pytest.raises(Unsafe) as info:
        fs.read_small(tmp_path / "link")
    assert str(info.value) == f"{tmp_path / 'link'} is a symlink; shimctl does not follow it"


def test_read_small_refuses_huge_files(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with big.open("wb") as f:
        f.truncate(10 * 1024 * 1024 * 1024)  # sparse 10 GiB: must not be read
    with pytest.raises(InvalidArgument) as info:
        fs.read_small(big)
    assert str(info.value) == f"{big} is {10 * 1024**3} bytes, more than the 65536 expected"
    (tmp_path / "eleven").write_bytes(b"x" * 11)
    with pytest.raises(InvalidArgument, match="more than the 10 expected"):
        fs.read_small(tmp_path / "eleven", limit=10)


def _in_thread(fn: Callable[[], object], timeout: float = 5.0) -> BaseException | None:
    """Run fn in a daemon thread; fail the test if it blocks. Returns what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the waiting thread
            raised.append(err)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "read_small blocked"
    return raised[0] if raised else None


def test_read_small_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "address"
    os.mkfifo(fifo)
    err = _in_thread(lambda: fs.read_small(fifo))
    assert isinstance(err, InvalidArgument)
    assert str(err) == f"{fifo} is not a regular file"


@pytest.mark.parametrize("path", ["/dev/zero", "/proc"])
def test_read_small_refuses_devices_and_dirs(path: str) -> None:
    err = _in_thread(lambda: fs.read_small(Path(path)))
    assert isinstance(err, InvalidArgument)
    assert str(err) == f"{path} is not a regular file"


def test_bundle_read_text(settings: Settings) -> None:
    b = _create(settings)
    assert b.read_text("address") is None
    (b.path / "address").write_bytes(b"  unix:///x\n")
    assert b.read_text("address") == "unix:///x"
    (b.path / "empty").write_bytes(b"\n")
    assert b.read_text("empty") is None
    (b.path / "address").unlink()
    os.mkfifo(b.path / "address")
    try:
        err = _in_thread(lambda: b.read_text("address"))
        assert isinstance(err, InvalidArgument)
    finally:
        # The node fixture's safety net reads `address` files plainly: never leave a fifo.
        (b.path / "address").unlink()
