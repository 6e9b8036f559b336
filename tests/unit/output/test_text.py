"""Text output of list, load and gc: each finding's notes as one indented line each under its
row, and the consequences of an action beyond its bundle; plain on a pipe and with NO_COLOR."""

from __future__ import annotations

import io
import json

import pytest

from shimctl.models.findings import Finding, Mode, ReconcileReport
from shimctl.output.console import Console
from shimctl.output.text import table


class Stream(io.StringIO):
    def __init__(self, *, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def finding(**kw: object) -> Finding:
    base: dict[str, object] = {
        "kind": "leaked",
        "namespace": "k8s.io",
        "id": "c1",
        "path": "/s/k8s.io/c1",
        "reason": "shim answers but has no task",
        "action": "delete-task",
    }
    base.update(kw)
    return Finding(**base)  # type: ignore[arg-type]


def render(
    command: Mode,
    *findings: Finding,
    dry_run: bool = False,
    tty: bool = False,
    env: dict[str, str] | None = None,
    json_output: bool = False,
) -> str:
    out = Stream(tty=tty)
    rep = ReconcileReport(command, dry_run, list(findings), 0.25, {f.kind: 1 for f in findings})
    Console(stdout=out, stderr=Stream(tty=tty), environ=env or {}, json_output=json_output).report(
        rep
    )
    return out.getvalue()


def under(text: str, id: str) -> list[str]:
    """The indented lines under the row of `id`."""
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if f" {id} " in line)
    block = []
    for line in lines[row + 1 :]:
        if not line.startswith("    "):
            break
        block.append(line[4:])
    return block


def test_notes_are_one_indented_line_each_under_their_row() -> None:
    out = Stream(tty=False)
    table(out, ["ID", "KIND"], [["a", "x"], ["bb", "y"]], color=False, notes=[["n1", "n2"], []])
    assert out.getvalue() == "ID  KIND\na   x\n    n1\n    n2\nbb  y\n"


def test_gc_dry_run_says_a_shared_shim_is_spared() -> None:
    member = finding(outcome="dry-run", shutdown_shim=False, notes=["younger than it looks"])
    text = render(Mode.GC, member, dry_run=True)
    assert under(text, "c1") == [
        "consequence: shared shim: not shut down (other bundles of its pod use it)",
        "note: younger than it looks",
    ]


def test_a_pod_member_spares_the_pods_shim_and_apply_says_it_once() -> None:
    dry = render(Mode.GC, finding(outcome="dry-run", sandbox="sb1"), dry_run=True)
    assert any("shared shim: not shut down" in line for line in under(dry, "c1"))
    done = finding(outcome="done", sandbox="sb1", notes=["shared shim: not shut down"])
    lines = under(render(Mode.GC, done), "c1")
    assert lines == ["note: shared shim: not shut down"]


def test_a_dead_shims_live_container_is_said_to_be_killed() -> None:
    dead = finding(
        kind="dead",
        id="d1",
        action="delete-dead",
        outcome="dry-run",
        task_pids=[4242],
        reason="no shim answers and no shim process is alive",
    )
    lines = under(render(Mode.GC, dead, dry_run=True), "d1")
    assert len(lines) == 1
    assert lines[0].startswith("consequence: container process 4242 still runs")
    assert "delete verb kills it" in lines[0]
    # Without a live container process, deleting a dead shim reaches nothing beyond its bundle.
    quiet = finding(kind="dead", id="d2", action="delete-dead", outcome="dry-run")
    assert under(render(Mode.GC, quiet, dry_run=True), "d2") == []


def test_stop_task_and_kill_say_what_they_kill() -> None:
    stop = finding(
        kind="orphaned", id="o1", action="stop-task", outcome="dry-run", task_pids=[7, 8]
    )
    hung = finding(kind="hung", id="h1", action="kill", outcome="dry-run", shim_pid=99)
    text = render(Mode.GC, stop, hung, dry_run=True)
    assert under(text, "o1") == [
        "consequence: kills the task's processes (7,8) with SIGKILL through its shim"
    ]
    (kill,) = under(text, "h1")
    assert kill.startswith("consequence: kills shim 99") and "delete verb" in kill


def test_orphan_runc_state_with_a_live_process_says_runc_kills_it() -> None:
    state = finding(
        kind="orphan-runc-state", id="s1", action="runc-delete", outcome="dry-run", task_pids=[9]
    )
    (line,) = under(render(Mode.GC, state, dry_run=True), "s1")
    assert line.startswith("consequence: `runc delete --force` kills container process 9")


def test_no_consequence_for_an_action_that_did_not_run() -> None:
    for outcome in ("failed", "skipped", "removed by containerd"):
        f = finding(
            kind="dead", action="delete-dead", outcome=outcome, task_pids=[5], notes=["why"]
        )
        assert under(render(Mode.GC, f), "c1") == ["note: why"], outcome


def test_list_shows_notes_under_rows() -> None:
    running = finding(kind="running", id="r1", action="keep", task_pids=[3])
    odd = finding(
        kind="unknown-runtime",
        id="u1",
        action="delete-dead",
        notes=["no shim-binary-path", "no address or bootstrap.json: reached at ..."],
    )
    text = render(Mode.LIST, running, odd)
    assert under(text, "r1") == []
    assert under(text, "u1") == [
        "note: no shim-binary-path",
        "note: no address or bootstrap.json: reached at ...",
    ]


def test_notes_cannot_drive_the_terminal() -> None:
    f = finding(outcome="done", notes=["shim said \x1b[31mred\nand more"])
    (line,) = under(render(Mode.GC, f, tty=True, env={"NO_COLOR": "1"}), "c1")
    assert line == "note: shim said \\x1b[31mred\\nand more"


def test_no_color_and_a_pipe_are_plain_a_colour_terminal_dims_notes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # rich reads it from the environment
    f = finding(outcome="done", notes=["a note"])
    for text in (render(Mode.GC, f), render(Mode.GC, f, tty=True, env={"NO_COLOR": "1"})):
        assert "\x1b" not in text and "    note: a note\n" in text
    coloured = render(Mode.GC, f, tty=True)
    assert "\x1b[2m    note: a note" in coloured


def test_json_keeps_notes_and_adds_no_consequence() -> None:
    f = finding(outcome="dry-run", shutdown_shim=False, notes=["n1"])
    doc = json.loads(render(Mode.GC, f, dry_run=True, json_output=True))
    (only,) = doc["result"]["findings"]
    assert only["notes"] == ["n1"]
    assert "consequence" not in json.dumps(doc)
