"""The events journal: what shims publish through `shimctl publish` when no containerd is there
to receive their events, and what `shimctl events` reads back.

`<state>/io.containerd.runtime.v2.task/.shimctl-events.jsonl`: one JSON object per line,
{time, namespace, topic, type_url, value (base64)}. It is a hidden plain file, which containerd's
loader skips. Appends hold an flock on the file; past MAX_BYTES it is rotated to `<name>.1`
(one generation kept), so the journal never grows without bound.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from shimctl.errors import FailedPrecondition, InvalidArgument
from shimctl.models.info import Event, EventsResult
from shimctl.node import fs, identifiers
from shimctl.settings import Settings

if TYPE_CHECKING:
    # Only gc records exits: `publish`, which every shim event runs, does not import them.
    from shimctl.models.findings import Finding, ReconcileReport

JOURNAL_NAME = ".shimctl-events.jsonl"
MAX_BYTES = 1 << 20
# A shim's event is small (a TaskExit is ~100 bytes); refuse anything absurd.
MAX_EVENT_BYTES = 1 << 20
# containerd's events.validateTopic: "/" then identifier-like components.
_TOPIC = re.compile(r"^(/[A-Za-z0-9][A-Za-z0-9._-]*)+$")


def journal_path(settings: Settings) -> Path:
    return settings.task_state / JOURNAL_NAME


def decode_any(data: bytes) -> tuple[str, bytes]:
    """An encoded google.protobuf.Any -> (type_url, value)."""
    from google.protobuf import any_pb2

    if len(data) > MAX_EVENT_BYTES:
        raise InvalidArgument(f"event of {len(data)} bytes is larger than {MAX_EVENT_BYTES}")
    msg = any_pb2.Any()
    try:
        msg.ParseFromString(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises more than DecodeError on hostile bytes
        raise InvalidArgument(f"the event on stdin is not an encoded protobuf Any: {err}") from None
    if not msg.type_url:
        raise InvalidArgument("the event on stdin has no type URL")
    return msg.type_url, msg.value


def validate_topic(topic: str) -> None:
    if not _TOPIC.fullmatch(topic):
        raise InvalidArgument(
            f"invalid topic {topic!r}", hint="topics look like /tasks/exit (slash-separated)"
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@contextlib.contextmanager
def _locked_journal(path: Path) -> Iterator[int]:
    """The journal opened for append under its flock; the fd is re-opened if another writer
    rotated the file while we waited for the lock."""
    try:
        fs.makedirs_mode(path.parent, 0o711)
    except OSError as err:
        raise FailedPrecondition(
            f"cannot create {path.parent}: {err.strerror}",
            hint="run shimctl as root, and check --state",
        ) from None
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(10):
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as err:
            raise FailedPrecondition(
                f"cannot open events journal {path}: {err.strerror}",
                hint="run shimctl as root, and check --state",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                current = os.lstat(path)
            except FileNotFoundError:
                current = None
            if current is None or (current.st_dev, current.st_ino) != (st.st_dev, st.st_ino):
                os.close(fd)
                continue  # rotated under us: open the new file
        except BaseException:
            os.close(fd)
            raise
        try:
            yield fd
        finally:
            os.close(fd)
        return
    raise FailedPrecondition(f"events journal {path} keeps changing; not written")


def publish(settings: Settings, *, topic: str, namespace: str, data: bytes) -> Event:
    """Append one event (an encoded protobuf Any, as shims write it to the publish binary's
    stdin) to the journal."""
    identifiers.validate_namespace(namespace)
    validate_topic(topic)
    type_url, value = decode_any(data)
    event = Event(
        time=_now(),
        namespace=namespace,
        topic=topic,
        type_url=type_url,
        value=base64.b64encode(value).decode(),
    )
    line = (json.dumps(event.__dict__, separators=(",", ":")) + "\n").encode()
    _append(journal_path(settings), line)
    return event


def _append(path: Path, data: bytes) -> None:
    """Append whole lines under the journal's lock, rotating it first when they would pass
    MAX_BYTES."""
    with _locked_journal(path) as fd:
        if os.fstat(fd).st_size + len(data) > MAX_BYTES:
            # Rotate under the lock: later writers see a new inode and re-open.
            os.replace(path, path.with_name(path.name + ".1"))
            with _locked_journal(path) as fresh:
                os.write(fresh, data)
        else:
            os.write(fd, data)


def _read_lines(path: Path) -> list[bytes]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as err:
        raise FailedPrecondition(
            f"cannot read events journal {path}: {err.strerror}",
            hint="run shimctl as root",
        ) from None
    with os.fdopen(fd, "rb") as f:
        return f.read(2 * MAX_BYTES).splitlines()


def _parse(line: bytes) -> Event | None:
    try:
        doc = json.loads(line)
        fields = ("time", "namespace", "topic", "type_url", "value")
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in fields):
            return None
        return Event(**{k: doc[k] for k in fields})
    except (ValueError, TypeError):
        return None


def read(settings: Settings, *, topic: str | None = None) -> EventsResult:
    """The journal's events, oldest first (the rotated generation, then the current file).
    With -n given, only that namespace's; with `topic`, only that topic's."""
    path = journal_path(settings)
    events: list[Event] = []
    skipped = 0
    for part in (path.with_name(path.name + ".1"), path):
        for line in _read_lines(part):
            if not line.strip():
                continue
            event = _parse(line)
            if event is None:
                skipped += 1
                continue
            if settings.namespace_given and event.namespace != settings.namespace:
                continue
            if topic is not None and event.topic != topic:
                continue
            events.append(event)
    return EventsResult(journal=str(path), events=events, skipped=skipped)


# -- the exits gc deleted -------------------------------------------------------------------

DELETE_TOPIC = "/tasks/delete"
TASK_DELETE_TYPE_URL = "containerd.events.TaskDelete"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    """One protobuf field: a varint (wire type 0) or length-delimited bytes (wire type 2)."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def task_delete_event(
    container_id: str, pid: int, exit_status: int, exited_at: float | None
) -> bytes:
    """An encoded containerd.events.TaskDelete (api/events/task.proto at containerd v2.1.9:
    container_id = 1, pid = 2, exit_status = 3, exited_at = 4 (a Timestamp: seconds = 1,
    nanos = 2), id = 5, empty for the init process). proto3: zero values are left out."""
    parts = [_field(1, container_id.encode())]
    if pid > 0:
        parts.append(_field(2, pid & 0xFFFFFFFF))
    if exit_status:
        parts.append(_field(3, exit_status & 0xFFFFFFFF))
    if exited_at is not None and exited_at > 0:
        seconds = int(exited_at)
        nanos = min(round((exited_at - seconds) * 1e9), 999_999_999)
        parts.append(_field(4, _field(1, seconds) + (_field(2, nanos) if nanos else b"")))
    return b"".join(parts)


def record_exits(settings: Settings, report: ReconcileReport) -> int:
    """Append a /tasks/delete event (shaped as containerd's TaskDelete) for each task gc
    deleted that had exited, so its exit status outlives the task as containerd's own event
    would record it. Returns how many were written. Never fails the run: a journal that
    cannot be written is said in each such finding's notes."""
    from shimctl.models.findings import Action, Outcome

    deletes = (Action.DELETE_TASK, Action.STOP_TASK, Action.DELETE_VIA_CONTAINERD)
    deleted = [
        f
        for f in report.findings
        # Removed by containerd: gc had shut the shim down, containerd's own cleanup of the
        # disconnected shim won the race for the bundle; the task is gone all the same.
        if f.exit_status is not None
        and f.outcome in (Outcome.DONE, Outcome.REMOVED_BY_CONTAINERD)
        and f.action in deletes
    ]
    if not deleted:
        return 0
    try:
        _append(journal_path(settings), b"".join(_exit_line(f) for f in deleted))
    except (FailedPrecondition, OSError) as err:
        for f in deleted:
            f.notes.append(f"its exit was not written to the events journal: {err}")
        return 0
    return len(deleted)


def _exit_line(f: Finding) -> bytes:
    assert f.exit_status is not None
    value = task_delete_event(
        f.id, f.task_pids[0] if f.task_pids else 0, f.exit_status, f.exited_at
    )
    event = Event(
        time=_now(),
        namespace=f.namespace,
        topic=DELETE_TOPIC,
        type_url=TASK_DELETE_TYPE_URL,
        value=base64.b64encode(value).decode(),
    )
    return (json.dumps(event.__dict__, separators=(",", ":")) + "\n").encode()
