"""What `start` and `delete` return."""

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
