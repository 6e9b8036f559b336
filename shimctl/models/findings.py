"""The vocabulary of list, load and gc (kinds, actions, outcomes, modes, probe results) and the
report they print.

Each word is a `StrEnum`: mypy checks it, and it is its string everywhere output sees it
(`json.dumps`, f-strings, dict keys), so the JSON stays what it was when these were plain
strings. The JSON Schema keeps them plain strings too: a new kind or outcome is not a schema
change (docs/json-schema.md, "Versioning").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class _Word(enum.StrEnum):
    """A word of the vocabulary: a string in output, an enum in code."""

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, handler: Any) -> Any:
        # Only tools/docgen.py calls this (pydantic is never imported at run time): the schema
        # says "string", not an enum, so adding a value keeps schema_version.
        return handler(str)


class Kind(_Word):
    """What a finding is. The order is the one metrics and the docs list them in."""

    RUNNING = "running"  # shim answers, task has processes (or is created/paused)
    CREATED = "created"  # task created, never started, older than --min-age (and containerd)
    STOPPED = "stopped"  # task exited, not deleted yet
    ORPHANED = "orphaned"  # task runs, containerd has no record of it: no client can stop it
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
    ORPHAN_RUNC_STATE = "orphan-runc-state"  # runc state of this containerd's, bundle gone


# What `--exit-code` counts as garbage found: leaks and what they leave, cleaned or not (a
# stopped task kept for its owner, a sandbox, an unsafe bundle are not garbage).
GARBAGE_KINDS = frozenset(
    {
        Kind.CREATED,
        Kind.ORPHANED,
        Kind.LEAKED,
        Kind.HUNG,
        Kind.DEAD,
        Kind.EMPTY,
        Kind.UNKNOWN_RUNTIME,
        Kind.ORPHAN_WORKDIR,
        Kind.STALE_HIDDEN,
        Kind.ORPHAN_PROCESS,
        Kind.STALE_SOCKET,
        Kind.ORPHAN_RUNC_STATE,
    }
)


class Action(_Word):
    """What a command does with a finding."""

    KEEP = "keep"
    REPORT = "report"  # garbage or suspicious, but not provably safe to touch
    DELETE_TASK = "delete-task"  # Delete RPC, Shutdown (unless sandboxed), bundle delete
    DELETE_DEAD = "delete-dead"  # shim binary delete verb, bundle delete, stale socket
    DELETE_BUNDLE = "delete-bundle"
    REMOVE = "remove"  # a work dir, hidden dir or socket
    SHUTDOWN = "shutdown"  # an orphan shim process with no task
    KILL = "kill"  # a hung shim, only with --kill-hung / --force
    # Kill the task through its shim (SIGKILL, all processes), then as delete-task; only an
    # orphaned task (no record) with --stop-orphaned, or a created one with --delete-created
    # where containerd has no record of it.
    STOP_TASK = "stop-task"
    # Tasks.Delete through containerd's API, so containerd's own view stays true: a task whose
    # record containerd has (an exit it never saw, containerd #6771; a created task).
    DELETE_VIA_CONTAINERD = "delete-via-containerd"
    # `runc --root <root> delete --force <id>`: kills what is left of the container (a waiting
    # `runc init`), removes its cgroup and runc state.
    RUNC_DELETE = "runc-delete"

    @property
    def changes_anything(self) -> bool:
        return self not in (Action.KEEP, Action.REPORT)


class Outcome(_Word):
    """How an action ended (a finding whose action did not run has none)."""

    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # the item changed since inspection: left alone
    DRY_RUN = "dry-run"
    REMOVED_BY_CONTAINERD = "removed by containerd"  # its own cleanup won a race with ours


class Owner(_Word):
    """What containerd (the owner of the shims) knows of a bundle's task."""

    TRACKED = "tracked"  # containerd answers and tracks the task (Tasks.List)
    RECORD_ONLY = "record-only"  # a container record, no task tracked (or containerd stopped)
    NO_RECORD = "no-record"  # containerd's records were read and have none for it
    SHIMCTL = "shimctl"  # `shimctl start` made it: no record by design
    UNKNOWN = "unknown"  # containerd's records could not be read


class Mode(_Word):
    """The command a reconcile runs for."""

    LIST = "list"
    LOAD = "load"  # containerd's startup reconciliation
    GC = "gc"


class ProbeResult(_Word):
    """What came back from a bundle's shim address."""

    ANSWERED = "answered"
    REFUSED = "refused"  # nothing listens (or no socket, or no address)
    UNRESPONSIVE = "unresponsive"  # connects but does not answer in time, or answers garbage


# One item as output shows it: its evidence, decision and outcome, assembled by reconcile/run.py
# (never changed after). No docstring: pydantic would put it into the generated JSON Schema.
@dataclass
class Finding:
    kind: Kind
    namespace: str
    id: str
    path: str
    reason: str
    action: Action = Action.KEEP
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
    # What containerd knows of it (bundles only; None for work dirs, processes, sockets).
    owner: Owner | None = None
    # A stopped task's exit, as its shim told it (Unix seconds): kept in the report even when
    # the task is deleted, so nothing is lost.
    exit_status: int | None = None
    exited_at: float | None = None
    # Set when the action ran (or was skipped); None when no action ran.
    outcome: Outcome | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


# Where containerd's records came from in this run. No docstring (see Finding).
@dataclass
class OwnerSummary:
    source: str  # api, metadb or unknown
    reason: str = ""  # why unknown, or what part could not be read
    containerd_pid: int | None = None
    containerd_started_at: float | None = None  # Unix seconds
    version: str = ""


@dataclass
class ReconcileReport:
    command: Mode
    dry_run: bool
    findings: list[Finding]
    duration_seconds: float
    counts: dict[Kind, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)  # "<action>:<outcome>" -> count
    errors: int = 0  # actions that failed
    owner: OwnerSummary | None = None
