"""`shimctl start`: create a bundle and start a shim for it the way containerd's manager does,
or join a sandbox's shim. Returns a StartResult and never prints; every mutation of the
state dir happens under the state lock."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from shimctl.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ShimctlError,
    Unavailable,
)
from shimctl.faults import checkpoint
from shimctl.models.results import StartResult
from shimctl.node import fs, identifiers, processes, sockets
from shimctl.node.bundle import ADDRESS, SHIMCTL_STARTED, Bundle
from shimctl.node.lock import state_lock
from shimctl.node.runtimes import check_executable, resolve_runtime_path
from shimctl.node.spec import default_spec, encode_spec, parse_spec, remapped_gid
from shimctl.settings import DEFAULT_RUNTIME, Settings
from shimctl.shim import binary
from shimctl.shim.bootstrap import Bootstrap, parse_bootstrap
from shimctl.shim.logfifo import LogDrain, LogSink
from shimctl.shim.task import validate_any
from shimctl.steps import access, shimstop


def start(
    settings: Settings,
    id: str,
    *,
    runtime_name: str = DEFAULT_RUNTIME,
    spec: bytes | None = None,
    spec_source: str = "--spec",
    sandbox: str | None = None,
    options: bytes | None = None,
    options_source: str = "",
    log_sink: LogSink | None = None,
) -> StartResult:
    """Create the bundle and start a shim for it (or join a sandbox's shim).
    `runtime_name`: a runtime name (io.containerd.runc.v2) or a shim binary's absolute path.
    `log_sink`: where the shim's log goes while it starts, with --debug (the CLI's console)."""
    s = settings
    bundle = access.bundle_of(s, id)
    if spec is None:
        spec_doc = default_spec(namespace=bundle.namespace, id=id)
        spec = encode_spec(spec_doc)
    else:
        spec_doc = parse_spec(spec, spec_source)
    if options is not None:
        validate_any(options, source=f"--options {options_source}")
    if sandbox is not None:
        identifiers.validate(sandbox)
        return _start_in_sandbox(s, bundle, sandbox, spec, spec_doc)
    shim_binary = resolve_runtime_path(runtime_name, containerd_binary=s.publish_binary)
    check_executable(shim_binary)
    with state_lock(s.task_state):
        Bundle.create(s.task_state, s.task_root, bundle.namespace, id, spec, remapped_gid(spec_doc))
        _mark_started(bundle)
        checkpoint("start:bundle-created")
        shim = access.shim_binary(s, shim_binary, bundle.namespace, id)
        boot: Bootstrap | None = None
        try:
            with LogDrain(bundle.open_log_fifo(), sink=log_sink if s.debug else None):
                output = binary.run_start(
                    shim, bundle.path, options=options, timeout=s.timeouts.start
                )
                checkpoint("start:shim-started")
                boot = parse_bootstrap(output, source="the shim's start output")
                # Written before the first RPC, so a bundle left by a crash right here
                # still names its shim binary and can be cleaned by `gc`.
                bundle.write_shim_binary_path(shim_binary)
                checkpoint("start:binary-path-written")
                _write_connection(bundle, boot)
                with access.dial(s, boot, bundle.namespace) as client:
                    info = client.connect_info(id, timeout=s.timeouts.load)
                checkpoint("start:connected")
        except BaseException:
            _undo_start(s, bundle, boot)
            raise
    return StartResult(
        id=id,
        namespace=bundle.namespace,
        bundle=str(bundle.path),
        address=boot.address,
        api_version=boot.version,
        shim_pid=info.shim_pid or None,
        runtime=shim_binary,
    )


def _mark_started(bundle: Bundle) -> None:
    """Mark the bundle as shimctl's: its task has no container record by design, so gc must
    never take it for an orphan. containerd ignores unknown files in a bundle and removes
    them with it (core/runtime/v2/bundle.go, Delete)."""
    fs.write_atomic(bundle.path / SHIMCTL_STARTED, b"", 0o600)


def _write_connection(bundle: Bundle, boot: Bootstrap) -> None:
    """Write the layout the shim's generation expects: bootstrap.json for version 3,
    a bare `address` for version 2 (the runc shim usually wrote it already)."""
    if boot.is_json:
        bundle.write_bootstrap(boot.to_json())
    elif bundle.read_bytes(ADDRESS) != boot.address.encode():
        bundle.write_address(boot.address)


def _start_in_sandbox(
    s: Settings, bundle: Bundle, sandbox_id: str, spec: bytes, spec_doc: dict[str, Any]
) -> StartResult:
    sandbox = access.locate(s, bundle.namespace, sandbox_id)
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
        Bundle.create(
            s.task_state, s.task_root, bundle.namespace, bundle.id, spec, remapped_gid(spec_doc)
        )
        try:
            _mark_started(bundle)
            bundle.write_sandbox(sandbox_id)
            _write_connection(bundle, boot)
            fd = bundle.open_log_fifo()
            with LogDrain(fd, sink=None), access.dial(s, boot, bundle.namespace) as client:
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


def _undo_start(s: Settings, bundle: Bundle, boot: Bootstrap | None) -> None:
    """Remove what a failed start made: stop the shim it started (verified), then the
    bundle. Best effort: the original error is what the caller reports."""
    with contextlib.suppress(ShimctlError, OSError):
        if boot is not None:
            with access.dial(s, boot, bundle.namespace) as client:
                client.shutdown(bundle.id, timeout=s.timeouts.shutdown)
    for shim in processes.find_shims(s.address):
        if processes.is_shim_of(
            shim, namespace=bundle.namespace, address=s.address, bundle=bundle.path
        ):
            processes.terminate(shim.ref, grace=s.timeouts.shutdown)
    if boot is not None:
        sockets.remove_if_stale(boot.address, s.socket_dir, settle=1.0)
    with contextlib.suppress(ShimctlError, OSError):
        bundle.delete()


def read_file_arg(path: Path, what: str) -> bytes:
    """The bytes of a --spec or --options file; an unreadable one is InvalidArgument."""
    try:
        return path.read_bytes()
    except OSError as err:
        raise InvalidArgument(f"cannot read {what} {path}: {err.strerror}") from None
