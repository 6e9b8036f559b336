"""A shim bundle (STATE/<ns>/<id>) and its work dir (ROOT/<ns>/<id>), as the manager lays them out.

Creation and deletion follow layout.md §4 and §6; every path this module removes is checked to
stay inside ROOT or STATE, and symlinks are never followed out of them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Collection
from pathlib import Path
from typing import NamedTuple

from shimctl.errors import AlreadyExists, FailedPrecondition, NotFound, Unsafe
from shimctl.node import fs, identifiers
from shimctl.node.mounts import unmount_all
from shimctl.shim.bootstrap import Bootstrap, parse_bootstrap

DIR_MODE = 0o711
BUNDLE_MODE = 0o700
ADDRESS = "address"
BOOTSTRAP = "bootstrap.json"
SHIM_BINARY_PATH = "shim-binary-path"
SANDBOX = "sandbox"
CONFIG = "config.json"
LOG = "log"
ROOTFS = "rootfs"
WORK = "work"
# A file of shimctl's own that `shimctl start` writes into the bundles it creates: such a task
# has no container record by design. containerd ignores unknown files in a bundle and removes
# them with it (core/runtime/v2/bundle.go, Delete: os.RemoveAll of the bundle dir).
SHIMCTL_STARTED = "shimctl-started"


class Bundle(NamedTuple):  # immutable; cheaper to define than a dataclass
    namespace: str
    id: str
    path: Path  # STATE/<ns>/<id>
    work: Path  # ROOT/<ns>/<id>
    task_state: Path
    task_root: Path

    @classmethod
    def of_task(cls, task_state: Path, task_root: Path, namespace: str, id: str) -> Bundle:
        """The bundle of task `id` in `namespace`, both validated first."""
        identifiers.validate_namespace(namespace)
        identifiers.validate_task_id(id)
        return cls.locate(task_state, task_root, namespace, id)

    @classmethod
    def locate(cls, task_state: Path, task_root: Path, namespace: str, id: str) -> Bundle:
        """Where task `id` of `namespace` lives under the task plugin's STATE and ROOT dirs
        (`<state>/io.containerd.runtime.v2.task`, `<root>/...`): plain paths, as containerd's
        NewBundle(ctx, root, state, id, spec) takes them (containerd 301026e5,
        core/runtime/v2/bundle.go)."""
        return cls(
            namespace=namespace,
            id=id,
            # One parse per path, not two joins: inspect locates every bundle of the node.
            path=Path(f"{task_state}/{namespace}/{id}"),
            work=Path(f"{task_root}/{namespace}/{id}"),
            task_state=task_state,
            task_root=task_root,
        )

    # -- reading ---------------------------------------------------------------------------

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def check_dir(self) -> None:
        """The bundle must be a real directory (a symlinked bundle is never acted through)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            raise NotFound(
                f"no bundle for task {self.id!r} in namespace {self.namespace!r} "
                f"(looked in {self.path})",
                hint="check the id, --namespace and --state",
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise Unsafe(f"bundle {self.path} is a symlink; shimctl does not follow it")
        if not stat.S_ISDIR(st.st_mode):
            raise Unsafe(f"bundle {self.path} is not a directory")

    def read_text(self, name: str) -> str | None:
        """A bundle file's text with surrounding whitespace removed; None if absent or empty."""
        try:
            data = fs.read_small(self.file(name))
        except FileNotFoundError:
            return None
        text = data.decode("utf-8", "replace").strip()
        return text or None

    def read_bytes(self, name: str, *, limit: int = fs.MAX_SMALL_FILE) -> bytes | None:
        try:
            return fs.read_small(self.file(name), limit=limit)
        except FileNotFoundError:
            return None

    def connection(self, entries: Collection[str] | None = None) -> Bootstrap | None:
        """How to reach this bundle's shim: `bootstrap.json` if present, else `address` (a bare
        address or bootstrap JSON). None when neither holds anything; junk raises
        InvalidArgument naming the file. `entries`: the bundle's listing, if already made
        (files not in it are not tried)."""
        for name in (BOOTSTRAP, ADDRESS):
            if entries is not None and name not in entries:
                continue
            text = self.read_text(name)
            if text is not None:
                return parse_bootstrap(text, source=self.file(name))
        return None

    def file(self, name: str) -> str:
        """The path of a file in the bundle (a plain string: cheap, for system calls)."""
        return f"{self.path}/{name}"

    def work_target(self) -> str | None:
        """Where the `work` link points, if it is a link; not resolved further."""
        try:
            return os.readlink(self.file(WORK))
        except OSError:
            return None

    def work_is_safe(self, target: str) -> bool:
        """The work link may only lead to this bundle's own work dir, ROOT/<ns>/<id>: one
        leading anywhere else (even another task's work dir) is never followed."""
        norm = os.path.normpath(target)
        return os.path.isabs(norm) and norm == str(self.work)

    def _safe_work_target(self) -> str | None:
        """Where the `work` link points; Unsafe if anywhere but this bundle's work dir."""
        work = self.work_target()
        if work is not None and not self.work_is_safe(work):
            raise Unsafe(
                f"{self.path / WORK} points at {work}, not at its own work dir {self.work}",
                hint="inspect the bundle by hand; shimctl does not follow such a link",
            )
        return work

    def check_safe(self) -> None:
        """Refuse a bundle with a link out of ROOT/STATE, before anything acts on it: the
        shim's own `delete` verb and Delete RPC unmount `<bundle>/rootfs` following links, and
        the work link is what Bundle.delete removes."""
        self.check_namespace_dirs()
        self._safe_work_target()
        if os.path.islink(self.path / ROOTFS):
            raise Unsafe(
                f"{self.path / ROOTFS} is a symlink; not acting through it",
                hint="inspect the bundle by hand; shimctl does not follow such a link",
            )

    def check_namespace_dirs(self) -> None:
        """STATE/<ns> and ROOT/<ns> must be real directories, not links out of the tree."""
        for ns_dir in (self.path.parent, self.work.parent):
            if os.path.islink(ns_dir):
                raise Unsafe(f"{ns_dir} is a symlink; shimctl does not act through it")

    # -- writing ---------------------------------------------------------------------------

    def write_address(self, address: str) -> None:
        # The manager's writer: temp `.address` opened O_EXCL, then rename; no newline.
        fs.write_atomic(self.path / ADDRESS, address.encode(), 0o644, exclusive_temp=True)

    def write_bootstrap(self, document: bytes) -> None:
        fs.write_atomic(self.path / BOOTSTRAP, document, 0o644)

    def write_shim_binary_path(self, shim_binary: str) -> None:
        fs.write_atomic(self.path / SHIM_BINARY_PATH, shim_binary.encode(), 0o600)

    def write_sandbox(self, sandbox_id: str) -> None:
        fs.write_atomic(self.path / SANDBOX, sandbox_id.encode(), 0o600)

    def open_log_fifo(self) -> int:
        """Create `log` if missing and open it read-write, non-blocking: we count as the reader
        the shim needs before it can open its end (shim-binary.md §4)."""
        fifo = self.path / LOG
        try:
            os.mkfifo(fifo, 0o700)
            os.chmod(fifo, 0o700)
        except FileExistsError:
            if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
                raise Unsafe(f"{fifo} exists and is not a fifo") from None
        return os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        task_state: Path,
        task_root: Path,
        namespace: str,
        id: str,
        spec: bytes,
        remapped_gid: int | None,
    ) -> Bundle:
        """NewBundle: state and work dirs, rootfs, `work` link, config.json (layout.md §4.1).

        The caller has validated `id` and `namespace`. On failure after the bundle dir exists,
        everything made here is removed again.
        """
        bundle = cls.locate(task_state, task_root, namespace, id)
        for top in (task_state, task_root):
            fs.makedirs_mode(top, DIR_MODE)
        fs.mkdir_mode(bundle.path.parent, DIR_MODE, exist_ok=True)
        try:
            fs.mkdir_mode(bundle.path, BUNDLE_MODE, exist_ok=False)
        except FileExistsError:
            raise AlreadyExists(
                f"bundle {bundle.path} already exists: task {id!r} in namespace "
                f"{namespace!r} is taken",
                hint=f"delete it first (shimctl delete {id}) or choose another id",
            ) from None
        try:
            if remapped_gid is not None:
                os.chown(bundle.path, -1, remapped_gid)
                os.chmod(bundle.path, 0o710)
            fs.mkdir_mode(bundle.work.parent, DIR_MODE, exist_ok=True)
            fs.mkdir_mode(bundle.path / ROOTFS, DIR_MODE, exist_ok=True)
            if os.path.lexists(bundle.work):
                # A stale work dir of an earlier task with this id is wiped, as the manager does.
                fs.remove_tree(bundle.work, within=task_root)
            fs.mkdir_mode(bundle.work, DIR_MODE, exist_ok=False)
            os.symlink(bundle.work, bundle.path / WORK)
            fd = os.open(
                bundle.path / CONFIG, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644
            )
            try:
                os.fchmod(fd, 0o644)
                view = memoryview(spec)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(Exception):
                bundle.delete()
            raise
        return bundle

    def delete(self) -> None:
        """Bundle.Delete (layout.md §6), refusing to follow links out of ROOT/STATE."""
        self.check_namespace_dirs()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise Unsafe(f"bundle {self.path} is not a directory; not removing it")
        work = self._safe_work_target()
        if st is not None:
            rootfs = self.path / ROOTFS
            if os.path.islink(rootfs):
                raise Unsafe(f"{rootfs} is a symlink; not unmounting or removing through it")
            unmount_all(rootfs)
            try:
                os.rmdir(rootfs)
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FailedPrecondition(
                        f"bundle rootfs {rootfs} is not empty",
                        hint="something is still in the container's rootfs; check and remove it",
                    ) from None
                raise
        bundle_err: BaseException | None = None
        try:
            fs.atomic_delete(self.path, within=self.task_state)
        except (OSError, Unsafe, FailedPrecondition) as err:
            bundle_err = err
        try:
            # No link (or a dangling one already gone): the id's own work dir is still ours.
            own_dir = os.path.isdir(self.work) and not os.path.islink(self.work)
            if work is not None or (bundle_err is None and own_dir):
                fs.atomic_delete(self.work, within=self.task_root)
        except (OSError, Unsafe, FailedPrecondition) as work_err:
            if bundle_err is None:
                raise
            raise FailedPrecondition(
                f"failed to remove both bundle and workdir locations: {work_err}: {bundle_err}"
            ) from None
        if bundle_err is not None:
            raise bundle_err
