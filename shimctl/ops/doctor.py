"""`shimctl doctor`: can shimctl do its job on this node? A checklist, each item with a fix.

Read-only: it opens (never takes) the state lock, probes sockets and asks every shim what it
holds, exactly as `list` does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from shimctl.errors import ShimctlError
from shimctl.models.findings import Kind
from shimctl.models.info import Check, CheckStatus, DoctorReport
from shimctl.node import sockets
from shimctl.node.lock import LOCK_NAME
from shimctl.node.runtimes import check_executable, resolve_runtime_path
from shimctl.settings import DEFAULT_CONFIG, DEFAULT_RUNTIME, Settings

OK, WARN, FAIL = CheckStatus.OK, CheckStatus.WARN, CheckStatus.FAIL
# Kinds gc cleans: their presence is worth a warning with `shimctl gc` as the fix.
_GARBAGE = (
    Kind.LEAKED,
    Kind.DEAD,
    Kind.EMPTY,
    Kind.UNKNOWN_RUNTIME,
    Kind.ORPHAN_WORKDIR,
    Kind.STALE_HIDDEN,
    Kind.ORPHAN_PROCESS,
    Kind.STALE_SOCKET,
)


def check_privileges() -> Check:
    if os.geteuid() == 0:
        return Check("privileges", OK, "running as root")
    return Check(
        "privileges",
        FAIL,
        f"running as uid {os.geteuid()}, not root",
        "run shimctl as root: shims, runc and the state dir need it",
    )


def check_config(config: Path | None) -> Check:
    path = config or Path(DEFAULT_CONFIG)
    if path.is_file():
        return Check("config", OK, f"read {path}")
    if config is not None:
        return Check(
            "config", WARN, f"{path} does not exist; defaults used", "pass --config with a file"
        )
    return Check("config", OK, f"{path} absent; containerd's defaults used")


def check_dir(name: str, top: Path, plugin_dir: Path, flag: str) -> Check:
    if not top.is_dir():
        return Check(
            name,
            FAIL,
            f"{top} does not exist",
            f"pass {flag} (or --config) naming containerd's {name.split()[0]} dir",
        )
    if not plugin_dir.is_dir():
        return Check(
            name,
            WARN,
            f"{plugin_dir} does not exist yet (no shim has run here)",
            f"if containerd runs shims, check {flag}; else nothing to do",
        )
    if not os.access(plugin_dir, os.R_OK | os.W_OK | os.X_OK):
        return Check(name, FAIL, f"{plugin_dir} is not writable", "run shimctl as root")
    return Check(name, OK, str(plugin_dir))


def check_lock(settings: Settings) -> Check:
    path = settings.task_state / LOCK_NAME
    if not settings.task_state.is_dir():
        return Check("state lock", WARN, f"{settings.task_state} does not exist yet")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        return Check(
            "state lock", FAIL, f"cannot open {path}: {err.strerror}", "run shimctl as root"
        )
    os.close(fd)
    return Check("state lock", OK, str(path))


def check_address(settings: Settings) -> Check:
    state = sockets.probe_address(settings.address)
    if state is sockets.SocketState.LISTENING:
        return Check(
            "containerd",
            OK,
            f"containerd answers at {settings.address}: gc is safe beside it; load refuses",
        )
    return Check(
        "containerd",
        WARN,
        f"nothing answers at {settings.address} ({state.value}); shims will be told this address",
        "start containerd, or pass --address (or --config) if it listens elsewhere",
    )


def check_socket_dir(settings: Settings) -> Check:
    d = settings.socket_dir
    if d.is_dir():
        return Check("socket dir", OK, str(d))
    return Check(
        "socket dir", WARN, f"{d} does not exist yet", "nothing to do: the first shim creates it"
    )


def check_runtime(settings: Settings) -> Check:
    try:
        path = resolve_runtime_path(DEFAULT_RUNTIME, containerd_binary=settings.publish_binary)
        check_executable(path)
    except ShimctlError as err:
        return Check(
            f"runtime {DEFAULT_RUNTIME}",
            FAIL,
            str(err),
            err.hint or "install containerd's runc shim",
        )
    return Check(f"runtime {DEFAULT_RUNTIME}", OK, path)


def check_runc() -> Check:
    path = shutil.which("runc")
    if path is None:
        return Check(
            "runc",
            WARN,
            "runc is not on PATH",
            "install runc (the runc shim needs it to run and delete tasks)",
        )
    return Check("runc", OK, path)


def check_publish_binary(settings: Settings) -> Check:
    path = settings.publish_binary
    if os.path.isabs(path) and os.access(path, os.X_OK):
        return Check("publish binary", OK, path)
    return Check(
        "publish binary",
        WARN,
        f"{path} is not an executable file",
        "pass --publish-binary (containerd, or shimctl itself)",
    )


def check_shims(settings: Settings) -> Check:
    from shimctl.reconcile.run import Reconciler

    try:
        rep = Reconciler(settings).list()
    except ShimctlError as err:
        return Check("shims", FAIL, f"cannot inspect: {err}", err.hint)
    except OSError as err:
        return Check("shims", FAIL, f"cannot inspect: {err}", "run shimctl as root")
    counts = rep.counts
    found = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no shims or bundles"
    if counts.get(Kind.HUNG):
        return Check(
            "shims",
            FAIL,
            f"{counts[Kind.HUNG]} shim(s) do not answer ({found})",
            "see `shimctl list`; `shimctl gc --kill-hung` stops them",
        )
    if counts.get(Kind.UNSAFE):
        return Check("shims", WARN, found, "see `shimctl list`; inspect unsafe items by hand")
    if any(counts.get(k) for k in _GARBAGE):
        return Check("shims", WARN, found, "run `shimctl gc` (or `shimctl gc --dry-run` first)")
    return Check("shims", OK, f"all reachable: {found}")


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """One check; a file it cannot even look at (not root: /run/containerd is 0700) fails
    that check, not the whole checklist."""
    try:
        return check()
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        return Check(name, FAIL, f"{err.strerror or err}:{where}", "run shimctl as root")


def run(settings: Settings, *, config: Path | None = None) -> DoctorReport:
    s = settings
    checks: list[tuple[str, Callable[[], Check]]] = [
        ("privileges", check_privileges),
        ("config", lambda: check_config(config)),
        ("state dir", lambda: check_dir("state dir", s.state, s.task_state, "--state")),
        ("root dir", lambda: check_dir("root dir", s.root, s.task_root, "--root")),
        ("state lock", lambda: check_lock(s)),
        ("containerd", lambda: check_address(s)),
        ("socket dir", lambda: check_socket_dir(s)),
        (f"runtime {DEFAULT_RUNTIME}", lambda: check_runtime(s)),
        ("runc", check_runc),
        ("publish binary", lambda: check_publish_binary(s)),
        ("shims", lambda: check_shims(s)),
    ]
    return DoctorReport(checks=[_guarded(name, check) for name, check in checks])
