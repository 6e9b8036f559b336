"""Typed results of manager operations. Plain dataclasses: cheap to import, and render.py
turns them into text, tables or JSON without the manager knowing how."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StartResult:
    id: str
    namespace: str
    bundle: str
    address: str
    api_version: int
    shim_pid: int | None
    runtime: str | None
    sandbox: str | None = None


@dataclass(frozen=True)
class DeleteResult:
    id: str
    namespace: str
    # What the task's exit was, as learned from the Delete RPC or the shim's delete verb.
    pid: int | None
    exit_status: int | None
    exited_at: str | None
    # "task-api": the shim answered; "shim-binary": it was gone and the delete verb ran.
    method: str
    shim_stopped: bool
    notes: list[str] = field(default_factory=list)


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


# -- version, doctor, events -----------------------------------------------------------------


@dataclass(frozen=True)
class ComponentVersion:
    """A program shimctl works with, as found on this node."""

    name: str  # "containerd", or a runtime name / shim binary path
    path: str | None  # resolved executable; None when not found
    version: str | None  # parsed version; None when absent or not parsable
    error: str | None = None  # why path or version is missing


@dataclass(frozen=True)
class VersionInfo:
    shimctl: str
    python: str
    containerd: ComponentVersion
    shims: list[ComponentVersion] = field(default_factory=list)


class CheckStatus:
    OK = "ok"
    WARN = "warn"  # works, but something an operator should know or fix
    FAIL = "fail"  # shimctl cannot do its job here until fixed


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # CheckStatus
    detail: str
    fix: str | None = None  # what to do when status is not ok


@dataclass(frozen=True)
class DoctorReport:
    checks: list[Check]

    @property
    def failed(self) -> int:
        return sum(1 for c in self.checks if c.status == CheckStatus.FAIL)


@dataclass(frozen=True)
class Event:
    """One event a shim published (`shimctl publish`), as kept in the events journal."""

    time: str  # RFC 3339, UTC
    namespace: str
    topic: str
    type_url: str  # the protobuf Any's type URL, e.g. containerd.events.TaskExit
    value: str  # the Any's value, base64


@dataclass(frozen=True)
class EventsResult:
    journal: str  # path of the journal file
    events: list[Event] = field(default_factory=list)
    # Lines of the journal that were not valid events (a torn write, a foreign line).
    skipped: int = 0
