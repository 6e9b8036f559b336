"""Console views, called directly: text on a pipe, colour on a terminal, NO_COLOR, JSON."""

from __future__ import annotations

import io
import json

import pytest

from shimctl.models.info import (
    Check,
    ComponentVersion,
    DoctorReport,
    Event,
    EventsResult,
    VersionInfo,
)
from shimctl.models.results import StartResult
from shimctl.output.console import Console


class Stream(io.TextIOWrapper):
    """A text stream over bytes (like sys.stdout), a terminal or not."""

    def __init__(self, *, tty: bool = False) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", write_through=True)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def bytes(self) -> bytes:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue()

    def text(self) -> str:
        return self.bytes().decode()


def _console(*, tty: bool = False, no_color: str | None = None, **kw: bool) -> Console:
    env = {} if no_color is None else {"NO_COLOR": no_color}
    return Console(stdout=Stream(tty=tty), stderr=Stream(tty=tty), environ=env, **kw)


def _out(c: Console) -> str:
    assert isinstance(c.stdout, Stream)
    return c.stdout.text()


def _err(c: Console) -> str:
    assert isinstance(c.stderr, Stream)
    return c.stderr.text()


START = StartResult(
    id="c1",
    namespace="default",
    bundle="/run/containerd/io.containerd.runtime.v2.task/default/c1",
    address="unix:///run/containerd/s/abc",
    api_version=3,
    shim_pid=42,
    runtime="io.containerd.runc.v2",
)
VERSION = VersionInfo(
    shimctl="0.1.0",
    python="3.11.7",
    containerd=ComponentVersion("containerd", "/usr/bin/containerd", "1.6.20"),
    shims=[ComponentVersion("io.containerd.runc.v2", None, None, "no such binary")],
)
EVENTS = EventsResult(
    journal="/s/.shimctl-events.jsonl",
    events=[Event("2026-01-01T00:00:00Z", "default", "/tasks/exit", "t.Exit", "AAAA")],
    skipped=1,
)


@pytest.mark.parametrize(
    ("tty", "no_color", "color"),
    [(False, None, False), (True, None, True), (True, "1", False), (True, "", True)],
)
def test_colour_facts(tty: bool, no_color: str | None, color: bool) -> None:
    c = _console(tty=tty, no_color=no_color)
    assert (c.color, c.stdout_isatty, c.stderr_isatty) == (color, tty, tty)


def test_start_view_text() -> None:
    c = _console()
    c.start(START)
    assert _out(c).splitlines() == [
        "id:        c1",
        "namespace: default",
        "bundle:    /run/containerd/io.containerd.runtime.v2.task/default/c1",
        "address:   unix:///run/containerd/s/abc",
        "api:       task v3",
        "shim pid:  42",
        "runtime:   io.containerd.runc.v2",
    ]
    assert _err(c) == ""


def test_start_view_json() -> None:
    c = _console(json_output=True)
    c.start(START)
    doc = json.loads(_out(c))
    assert (doc["schema_version"], doc["command"]) == (2, "start")
    assert doc["result"]["shim_pid"] == 42 and doc["result"]["sandbox"] is None


def test_version_view() -> None:
    c = _console()
    c.version(VERSION)
    assert _out(c).splitlines() == [
        "shimctl:                    0.1.0",
        "python:                     3.11.7",
        "containerd:                 1.6.20 (/usr/bin/containerd)",
        "shim io.containerd.runc.v2: not found: no such binary",
    ]


def test_events_view_plain_and_warning() -> None:
    c = _console()
    c.events(EVENTS)
    lines = _out(c).splitlines()
    assert lines[0].split() == ["TIME", "NAMESPACE", "TOPIC", "TYPE", "BYTES"]
    assert lines[1].split() == ["2026-01-01T00:00:00Z", "default", "/tasks/exit", "t.Exit", "3"]
    assert _err(c) == (
        "shimctl: warning: 1 line(s) of /s/.shimctl-events.jsonl are not events; skipped\n"
    )


def test_events_view_empty_and_json() -> None:
    c = _console()
    c.events(EventsResult(journal="/j"))
    assert _out(c) == "no events in /j\n"
    c = _console(json_output=True)
    c.events(EVENTS)
    assert json.loads(_out(c))["result"]["events"][0]["topic"] == "/tasks/exit"


def test_publish_is_silent_without_json() -> None:
    event = EVENTS.events[0]
    c = _console()
    c.publish(event)
    assert (_out(c), _err(c)) == ("", "")
    c = _console(json_output=True)
    c.publish(event)
    assert json.loads(_out(c))["command"] == "publish"


def test_doctor_view_plain_with_fixes() -> None:
    rep = DoctorReport([Check("privileges", "ok", "root"), Check("dirs", "warn", "x", "mkdir")])
    c = _console(tty=True, no_color="1")  # a terminal, but NO_COLOR: plain
    c.doctor(rep)
    assert _out(c) == (
        "[ok]   privileges  root\n"
        "[warn] dirs        x\n"
        "                   fix: mkdir\n"
        "doctor: 2 checks, 0 failed, 1 warnings\n"
    )


def test_doctor_view_colour_on_a_terminal() -> None:
    rep = DoctorReport([Check("dirs", "fail", "missing", "mkdir")])
    c = _console(tty=True)
    c.doctor(rep)
    assert "\x1b[" in _out(c) and "[FAIL]" in _out(c)


def test_logs_into_a_pipe_are_raw_bytes() -> None:
    c = _console()
    c.logs([b"level=info \x1b[2J", b"\xff\n"])
    assert isinstance(c.stdout, Stream)
    assert c.stdout.bytes() == b"level=info \x1b[2J\xff\n"


def test_logs_on_a_terminal_are_escaped() -> None:
    c = _console(tty=True)
    c.logs([b"a\x1b[2J\n", b"\xe2\x82", b"\xac\n"])  # a euro sign split across chunks
    assert _out(c) == "a\\x1b[2J\n\u20ac\n"


def test_shim_log_goes_to_stderr_as_is() -> None:
    c = _console()
    c.shim_log(b"shim says \x00hi\n")
    assert isinstance(c.stderr, Stream)
    assert c.stderr.bytes() == b"shim says \x00hi\n"
    assert _out(c) == ""


def test_interrupted_and_warn_lines() -> None:
    c = _console(json_output=True)
    c.interrupted()
    c.warn("odd\x1b")
    assert _err(c) == "shimctl: interrupted\nshimctl: warning: odd\\x1b\n"
    assert _out(c) == ""


def test_table_colour_only_on_a_terminal_without_no_color() -> None:
    for tty, no_color, coloured in [(True, None, True), (True, "1", False), (False, None, False)]:
        c = _console(tty=tty, no_color=no_color)
        c.table(["ID"], [["a"]])
        assert ("\x1b[" in _out(c)) is coloured, (tty, no_color)


def test_progress_bar_draws_on_stderr_only() -> None:
    c = _console(tty=True)
    with c.progress() as bar:
        for i in range(21):
            bar("apply", i, 20)
    assert "applying actions" in _err(c)
    assert _out(c) == ""
