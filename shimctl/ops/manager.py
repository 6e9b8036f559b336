"""ShimManager: start and delete shims the way containerd's manager does, more carefully.
(list, load and gc live in reconcile.py.)

Each operation returns a typed result (shimctl/models/) and never prints. Every mutation of
the state dir happens under the state lock.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from shimctl.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ProtocolError,
    ShimctlError,
    Unavailable,
    Unknown,
    Unsafe,
)
from shimctl.faults import checkpoint
from shimctl.models.progress import ProgressFn
from shimctl.models.results import DeleteResult, StartResult
from shimctl.node import identifiers, processes, sockets
from shimctl.node.bundle import ADDRESS, SANDBOX, Bundle
from shimctl.node.lock import state_lock
from shimctl.node.runtimes import check_executable, resolve_runtime_path
from shimctl.node.spec import default_spec, encode_spec, parse_spec, remapped_gid
from shimctl.ops import shimstop
from shimctl.settings import DEFAULT_RUNTIME, Settings
from shimctl.shim import binary
from shimctl.shim.bootstrap import Bootstrap, parse_bootstrap
from shimctl.shim.logfifo import LogDrain, LogSink
from shimctl.shim.task import Exit, TaskClient, validate_any


class ShimManager:
    def __init__(
        self,
        settings: Settings,
        *,
        progress: ProgressFn | None = None,
        log_sink: LogSink | None = None,
    ) -> None:
        self.settings = settings
        # With --debug, where the shim's log goes while it starts (the CLI's console).
        self.log_sink = log_sink
        # Called as inspect and apply go (render.py shows a bar on a terminal).
        self.progress = progress

    # -- helpers ---------------------------------------------------------------------------

    def _dial(self, boot: Bootstrap, namespace: str) -> TaskClient:
        return TaskClient.connect(
            boot.address,
            namespace,
            timeout=self.settings.timeouts.load,
            api_version=boot.version,
        )

    def _bundle(self, id: str) -> Bundle:
        return Bundle.of_task(self.settings, id)

    # -- start -----------------------------------------------------------------------------

    def start(
        self,
        id: str,
        *,
        runtime: str = DEFAULT_RUNTIME,
        spec: bytes | None = None,
        spec_source: str = "--spec",
        sandbox: str | None = None,
        options: bytes | None = None,
        options_source: str = "",
    ) -> StartResult:
        """Create the bundle and start a shim for it (or join a sandbox's shim)."""
        bundle = self._bundle(id)
        s = self.settings
        if spec is None:
            spec_doc = default_spec()
            spec = encode_spec(spec_doc)
        else:
            spec_doc = parse_spec(spec, spec_source)
        if options is not None:
            validate_any(options, source=f"--options {options_source}")
        if sandbox is not None:
            identifiers.validate(sandbox)
            return self._start_in_sandbox(bundle, sandbox, spec, spec_doc)
        runtime_path = resolve_runtime_path(runtime, containerd_binary=s.publish_binary)
        check_executable(runtime_path)
        with state_lock(s.task_state):
            Bundle.create(s, bundle.namespace, id, spec, remapped_gid(spec_doc))
            checkpoint("start:bundle-created")
            shim = binary.ShimBinary.for_settings(s, runtime_path, bundle.namespace, id)
            boot: Bootstrap | None = None
            try:
                with LogDrain(bundle.open_log_fifo(), sink=self.log_sink if s.debug else None):
                    output = binary.run_start(
                        shim, bundle.path, options=options, timeout=s.timeouts.start
                    )
                    checkpoint("start:shim-started")
                    boot = parse_bootstrap(output, source="the shim's start output")
                    # Written before the first RPC, so a bundle left by a crash right here
                    # still names its runtime and can be cleaned by `gc`.
                    bundle.write_shim_binary_path(runtime_path)
                    checkpoint("start:binary-path-written")
                    self._write_connection(bundle, boot)
                    with self._dial(boot, bundle.namespace) as client:
                        info = client.connect_info(id, timeout=s.timeouts.load)
                    checkpoint("start:connected")
            except BaseException:
                self._undo_start(bundle, boot)
                raise
        return StartResult(
            id=id,
            namespace=bundle.namespace,
            bundle=str(bundle.path),
            address=boot.address,
            api_version=boot.version,
            shim_pid=info.shim_pid or None,
            runtime=runtime_path,
        )

    def _write_connection(self, bundle: Bundle, boot: Bootstrap) -> None:
        """Write the layout the shim's generation expects: bootstrap.json for version 3,
        a bare `address` for version 2 (the runc shim usually wrote it already)."""
        if boot.is_json:
            bundle.write_bootstrap(boot.to_json())
        elif bundle.read_bytes(ADDRESS) != boot.address.encode():
            bundle.write_address(boot.address)

    def _start_in_sandbox(
        self, bundle: Bundle, sandbox_id: str, spec: bytes, spec_doc: dict[str, object]
    ) -> StartResult:
        s = self.settings
        sandbox = Bundle.locate(s, bundle.namespace, sandbox_id)
        try:
            sandbox.check_dir()
        except NotFound:
            raise NotFound(
                f"can't find sandbox {sandbox_id!r} in namespace {bundle.namespace!r}",
                hint=f"start the sandbox first: shimctl start {sandbox_id}",
            ) from None
        boot = sandbox.connection()
        if boot is None:
            raise FailedPrecondition(
                f"failed to get socket address for sandbox {sandbox_id!r}: no shim address",
                hint="the sandbox bundle has no address; its shim may not have started",
            )
        with state_lock(s.task_state):
            Bundle.create(s, bundle.namespace, bundle.id, spec, remapped_gid(spec_doc))
            try:
                bundle.write_sandbox(sandbox_id)
                self._write_connection(bundle, boot)
                fd = bundle.open_log_fifo()
                with LogDrain(fd, sink=None), self._dial(boot, bundle.namespace) as client:
                    info = shimstop.connect_verified(
                        client, bundle.id, sandbox.path, bundle.namespace, s
                    )
            except BaseException as err:
                with contextlib.suppress(Exception):
                    bundle.delete()
                if isinstance(err, Unavailable | DeadlineExceeded):
                    raise type(err)(
                        f"failed to load sandbox task {sandbox_id!r}: {err}", hint=err.hint
                    ) from None
                raise
        return StartResult(
            id=bundle.id,
            namespace=bundle.namespace,
            bundle=str(bundle.path),
            address=boot.address,
            api_version=boot.version,
            shim_pid=info.shim_pid or None,
            runtime=None,
            sandbox=sandbox_id,
        )

    def _undo_start(self, bundle: Bundle, boot: Bootstrap | None) -> None:
        """Remove what a failed start made: stop the shim it started (verified), then the
        bundle. Best effort: the original error is what the caller reports."""
        s = self.settings
        with contextlib.suppress(ShimctlError, OSError):
            if boot is not None:
                with self._dial(boot, bundle.namespace) as client:
                    client.shutdown(bundle.id, timeout=s.timeouts.shutdown)
        for shim in processes.find_shims(s.address):
            if shim.runs_in(bundle.namespace, bundle.path):
                processes.terminate(shim.ref, grace=s.timeouts.shutdown)
        if boot is not None:
            sockets.remove_if_stale(boot.address, s.socket_dir, settle=1.0)
        with contextlib.suppress(ShimctlError, OSError):
            bundle.delete()

    # -- delete ----------------------------------------------------------------------------

    def delete(self, id: str, *, force: bool = False) -> DeleteResult:
        """The task manager's delete: Delete RPC, Shutdown, bundle delete; if the shim is gone,
        the shim binary's `delete` verb instead of the RPCs."""
        bundle = self._bundle(id)
        bundle.check_dir()
        s = self.settings
        with state_lock(s.task_state):
            bundle.check_dir()
            bundle.check_safe()
            sandboxed = bundle.read_text(SANDBOX) is not None
            notes: list[str] = []
            try:
                boot = bundle.connection()
            except InvalidArgument as err:
                boot = None
                notes.append(f"unreadable address: {err}")
            try:
                if boot is None:
                    raise Unavailable("the bundle has no shim address")
                exit_, stopped = self._delete_through_shim(bundle, boot, sandboxed, notes)
                method = "task-api"
            except (Unavailable, DeadlineExceeded, ProtocolError) as err:
                # Unavailable: nothing answers. DeadlineExceeded: something hangs. Garbage
                # (ProtocolError) is no answer either, but only --force acts on it.
                if isinstance(err, ProtocolError) and not force:
                    raise
                exit_ = self._delete_without_shim(bundle, boot, err, force=force, notes=notes)
                method, stopped = "shim-binary", True
            bundle.delete()
            # A shim that died in Shutdown (rather than exiting cleanly) leaves its socket.
            if (
                method == "task-api"
                and stopped
                and boot is not None
                and sockets.remove_if_stale(boot.address, s.socket_dir)
            ):
                notes.append("removed the stopped shim's stale socket")
        return DeleteResult(
            id=id,
            namespace=bundle.namespace,
            pid=exit_.pid if exit_ else None,
            exit_status=exit_.exit_status if exit_ else None,
            exited_at=exit_.exited_at.isoformat() if exit_ and exit_.exited_at else None,
            method=method,
            shim_stopped=stopped,
            notes=notes,
        )

    def _delete_through_shim(
        self, bundle: Bundle, boot: Bootstrap, sandboxed: bool, notes: list[str]
    ) -> tuple[Exit | None, bool]:
        s = self.settings
        with self._dial(boot, bundle.namespace) as client:
            info = shimstop.connect_verified(client, bundle.id, bundle.path, bundle.namespace, s)
            try:
                exit_ = shimstop.delete_task(client, bundle.id, s)
            except Unknown as err:
                raise FailedPrecondition(
                    f"the shim refused to delete task {bundle.id!r}: {err}",
                    hint="stop the task first (it may still be running), then retry",
                ) from None
            checkpoint("delete:task-deleted")
            if exit_ is None:
                notes.append("the shim had no task (never created, or already deleted)")
            if sandboxed:
                notes.append("sandboxed task: the sandbox's shim keeps running")
                return exit_, False
            stopped = shimstop.shutdown(client, bundle.id, info.shim_pid, s, notes)
        checkpoint("delete:shim-stopped")
        return exit_, stopped

    def _delete_without_shim(
        self,
        bundle: Bundle,
        boot: Bootstrap | None,
        reason: ShimctlError,
        *,
        force: bool,
        notes: list[str],
    ) -> Exit | None:
        s = self.settings
        live = [
            shim
            for shim in processes.find_shims(s.address)
            if shim.runs_in(bundle.namespace, bundle.path)
            or (shim.namespace == bundle.namespace and shim.id == bundle.id)
        ]
        if live and not force:
            pids = ", ".join(str(p.ref.pid) for p in live)
            raise FailedPrecondition(
                f"the shim of {bundle.id!r} (pid {pids}) is alive but does not answer: {reason}",
                hint="retry later, or pass --force to stop it (SIGTERM, then SIGKILL)",
            )
        for shim in live:
            if not processes.terminate(shim.ref, grace=s.timeouts.shutdown):
                raise Unsafe(f"shim process {shim.ref.pid} did not exit after SIGKILL")
            notes.append(f"stopped unresponsive shim {shim.ref.pid}")
        exit_ = shimstop.run_delete_verb(s, bundle, notes)
        checkpoint("delete:verb-run")
        settle = 1.0 if live else 0.0  # a shim we just killed may hold its socket a moment
        if boot is not None and sockets.remove_if_stale(boot.address, s.socket_dir, settle=settle):
            notes.append("removed the dead shim's socket")
        return exit_


def read_file_arg(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidArgument(f"cannot read {what} {path}: {err.strerror}") from None
