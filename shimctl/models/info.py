"""What `version`, `doctor`, `events` and `publish` return."""

from __future__ import annotations

from dataclasses import dataclass, field


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
