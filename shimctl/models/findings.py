"""The Findings vocabulary of list, load and gc (kinds, actions) and their report."""

from __future__ import annotations

from dataclasses import dataclass, field


class Kind:
    """Finding kinds: one vocabulary for list, load, gc, JSON and metrics."""

    RUNNING = "running"  # shim answers, task has processes (or is created/paused)
    STOPPED = "stopped"  # task exited, not deleted yet
    SANDBOX = "sandbox"  # other bundles name it or share its shim, or its spec says so
    LEAKED = "leaked"  # shim answers, no task, not a sandbox (containerd #6860)
    HUNG = "hung"  # connects, never answers within the timeout
    DEAD = "dead"  # refuses or no socket, process gone
    EMPTY = "empty"  # bundle dir empty (an unreadable one is UNSAFE: never deleted unseen)
    UNKNOWN_RUNTIME = "unknown-runtime"  # no usable shim-binary-path
    UNSAFE = "unsafe"  # a link out of root/state, an invalid name, an unreadable dir
    ORPHAN_WORKDIR = "orphan-workdir"  # ROOT/<ns>/<id> with no bundle
    STALE_HIDDEN = "stale-hidden"  # .<id> left by an interrupted atomic delete
    ORPHAN_PROCESS = "orphan-process"  # shim process of this address whose bundle is gone
    STALE_SOCKET = "stale-socket"  # refusing socket in /run/containerd/s that no bundle names

    ALL = (
        RUNNING,
        STOPPED,
        SANDBOX,
        LEAKED,
        HUNG,
        DEAD,
        EMPTY,
        UNKNOWN_RUNTIME,
        UNSAFE,
        ORPHAN_WORKDIR,
        STALE_HIDDEN,
        ORPHAN_PROCESS,
        STALE_SOCKET,
    )


class Action:
    KEEP = "keep"
    REPORT = "report"  # garbage or suspicious, but not provably safe to touch
    DELETE_TASK = "delete-task"  # Delete RPC, Shutdown (unless sandboxed), bundle delete
    DELETE_DEAD = "delete-dead"  # shim binary delete verb, bundle delete, stale socket
    DELETE_BUNDLE = "delete-bundle"
    REMOVE = "remove"  # a work dir, hidden dir or socket
    SHUTDOWN = "shutdown"  # an orphan shim process with no task
    KILL = "kill"  # a hung shim, only with --kill-hung / --force


@dataclass
class Finding:
    kind: str
    namespace: str
    id: str
    path: str
    reason: str
    action: str = Action.KEEP
    shim_pid: int | None = None
    task_pids: list[int] = field(default_factory=list)
    task_status: str | None = None
    runtime: str | None = None
    address: str | None = None
    api_version: int | None = None
    protocol: str | None = None
    age_seconds: float | None = None
    sandbox: str | None = None
    # False when the shim serves other bundles that still have tasks (never shut down then).
    shutdown_shim: bool = True
    # Set when the action ran (or was skipped): "done", "failed", "skipped", "dry-run".
    outcome: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class ReconcileReport:
    command: str  # "list", "load" or "gc"
    dry_run: bool
    findings: list[Finding]
    duration_seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    errors: int = 0
