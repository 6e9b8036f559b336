"""What containerd (the owner of the shims) knows, as typed, frozen records.

Two sources fill them: containerd's gRPC API while it answers (containers, tasks, sandboxes,
namespaces) and its metadata database while it is stopped (containers, sandboxes and
namespaces; a stopped containerd tracks no task). Neither: the source is ``unknown`` and the
caller behaves as if it had no records at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import TypeVar

from shimctl.node.processes import ProcessRef

K = TypeVar("K")
V = TypeVar("V")


def frozen_map(items: Mapping[K, V] | None = None) -> Mapping[K, V]:
    """A read-only copy of ``items`` (records are shared between threads)."""
    return MappingProxyType(dict(items or {}))


class Source(Enum):
    API = "api"  # containerd answered at its address
    METADB = "metadb"  # containerd was stopped; its meta.db was read
    UNKNOWN = "unknown"  # neither: owner unknown


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    """One container record (``v1/<ns>/containers/<id>``, or Containers.List)."""

    id: str
    runtime: str  # runtime name, e.g. io.containerd.runc.v2, or a path
    labels: Mapping[str, str] = field(default_factory=frozen_map)
    sandbox_id: str = ""  # 1.7+; empty when none (and always on 1.6)
    image: str = ""
    created_at: float | None = None  # Unix seconds
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A task containerd tracks (Tasks.List; only while containerd answers). Status
    ``unknown`` with pid 0: containerd tracks it but its shim did not tell its state."""

    id: str
    pid: int
    status: str  # created, running, stopped, paused, pausing, unknown
    exit_status: int = 0
    exited_at: float | None = None  # Unix seconds; None while it has not exited


@dataclass(frozen=True, slots=True)
class SandboxRecord:
    """A sandbox store record (1.7: ``<ns>/sandboxes/<id>``; 2.x: ``v1/<ns>/sandboxes/<id>``)."""

    id: str
    runtime: str
    sandboxer: str = ""  # 2.x
    labels: Mapping[str, str] = field(default_factory=frozen_map)
    created_at: float | None = None
    updated_at: float | None = None


@dataclass(frozen=True, slots=True)
class NamespaceRecords:
    name: str
    containers: Mapping[str, ContainerRecord] = field(default_factory=frozen_map)
    tasks: Mapping[str, TaskRecord] = field(default_factory=frozen_map)
    sandboxes: Mapping[str, SandboxRecord] = field(default_factory=frozen_map)


@dataclass(frozen=True, slots=True)
class OwnerRecords:
    """Everything one read found. With ``source`` UNKNOWN the maps are empty and ``failure``
    and ``reason`` say why (no answer, a lock held, a malformed file ...); with API, a
    ``reason`` says what part could not be read (tasks or sandboxes, see the flags)."""

    source: Source
    namespaces: Mapping[str, NamespaceRecords] = field(default_factory=frozen_map)
    #: Tasks.List was answered in every namespace (API source). Even then a task missing
    #: from ``tasks`` may be one containerd tracks: containerd leaves out a task whose shim
    #: does not answer (services/tasks/local.go, getProcessState: NotFound or Unavailable).
    tasks_known: bool = False
    #: There is a sandbox store (1.7+) and it was read: ``sandboxes`` is the whole truth.
    sandboxes_known: bool = False
    #: containerd's process (SO_PEERCRED on its socket), PID and start time; None if unknown.
    containerd: ProcessRef | None = None
    #: When containerd started on today's wall clock (comparable with a task's exited_at;
    #: ``containerd.create_time`` is psutil's, for identity only); None if unknown.
    containerd_started_at: float | None = None
    version: str = ""  # containerd's version (API) or "" when not known
    schema_version: int | None = None  # meta.db ``v1/version`` (metadb source)
    #: Why the owner is unknown, as a code: a BoltError kind of meta.db ("missing", "locked",
    #: "unsafe", "unreadable", "corrupt", "too-large"), or "api:<gRPC status name>" /
    #: "api:<exception>" when the containerd at the address did not answer properly.
    failure: str = ""
    reason: str = ""  # the same for people

    @property
    def known(self) -> bool:
        return self.source is not Source.UNKNOWN

    def namespace(self, name: str) -> NamespaceRecords:
        """The records of ``name`` (empty if the owner has none there)."""
        return self.namespaces.get(name) or NamespaceRecords(name)


def unknown(failure: str, reason: str, containerd: ProcessRef | None = None) -> OwnerRecords:
    return OwnerRecords(Source.UNKNOWN, containerd=containerd, failure=failure, reason=reason)
