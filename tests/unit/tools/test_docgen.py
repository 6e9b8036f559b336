"""Generated artefacts (docs/json-schema.md, completions/, docs/shimctl.1) are committed and
current; the completion scripts work in their shells; dynamic completion reads the state dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.shell_completion import BashComplete, ShellComplete

from shimctl.cli.app import main
from tests.support.helpers import Node
from tools import docgen

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("what", docgen.KINDS)
def test_generated_files_are_current(what: str) -> None:
    stale = docgen.stale(REPO, [what])
    assert not stale, f"stale: {[str(p.relative_to(REPO)) for p in stale]}; run `make docs`"


def test_docgen_check_mode(tmp_path: Path) -> None:
    # A fresh tree is all stale; after writing, --check passes.
    argv = [sys.executable, "-m", "tools.docgen", "--repo", str(tmp_path)]
    check = subprocess.run([*argv, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 1 and "stale: docs/json-schema.md" in check.stderr
    subprocess.run(argv, check=True, capture_output=True)
    assert subprocess.run([*argv, "--check"], capture_output=True, check=False).returncode == 0
    assert (tmp_path / "completions" / "_shimctl").is_file()
    bad = subprocess.run([*argv, "nonsense"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2


def test_schema_covers_every_reporting_command() -> None:
    group = main
    assert isinstance(group, click.Group)
    ctx = click.Context(group)
    commands = {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}
    json_commands = {
        name
        for name, cmd in commands.items()
        if cmd is not None and any(p.name == "json_output" for p in cmd.params)
    }
    assert json_commands == set(docgen.RESULTS)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_has_no_groff_warnings() -> None:
    proc = subprocess.run(
        ["groff", "-man", "-ww", "-z", str(REPO / "docs" / "shimctl.1")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    text = (REPO / "docs" / "shimctl.1").read_text()
    for command in ("start", "delete", "list", "gc", "logs", "publish", "doctor", "version"):
        assert f'.SS "shimctl {command} ' in text


@pytest.mark.parametrize(
    ("shell", "check"),
    [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])],
)
def test_completion_script_syntax(shell: str, check: list[str]) -> None:
    if shutil.which(check[0]) is None:
        pytest.skip(f"{shell} not installed")
    path = REPO / "completions" / docgen.COMPLETION_FILES[shell]
    proc = subprocess.run([*check, str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


# -- dynamic completion -------------------------------------------------------------------------


def _tree(node: Node) -> None:
    for ns, ids in {"default": ["c1", "c2", ".hidden"], "k8s.io": ["p1"]}.items():
        for task in ids:
            (node.task_state / ns / task).mkdir(parents=True)
    (node.task_state / ".shimctl.node.lock").touch()
    (node.task_state / "default" / "a-file").touch()


def _complete(node: Node, args: list[str], incomplete: str = "") -> list[str]:
    comp: ShellComplete = BashComplete(main, {}, "shimctl", "_SHIMCTL_COMPLETE")
    return [c.value for c in comp.get_completions(args, incomplete)]


@pytest.fixture
def clean_env(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("SHIMCTL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("SHIMCTL_CONFIG", str(node.base / "none.toml"))


def test_complete_ids_and_namespaces(node: Node, clean_env: None) -> None:
    _tree(node)
    state = ["--state", str(node.state)]
    assert _complete(node, [*state, "delete"]) == ["c1", "c2"]
    assert _complete(node, [*state, "delete"], "c2") == ["c2"]
    assert _complete(node, [*state, "-n", "k8s.io", "logs"]) == ["p1"]
    assert _complete(node, [*state, "start", "x", "--sandbox"]) == ["c1", "c2"]
    assert _complete(node, [*state, "-n"]) == ["default", "k8s.io"]
    assert _complete(node, [*state, "-n"], "k8") == ["k8s.io"]
    assert _complete(node, [*state, "publish", "--namespace"]) == ["default", "k8s.io"]
    # Global options after the command count too.
    assert _complete(node, ["delete", *state]) == ["c1", "c2"]
    assert _complete(node, ["logs", *state, "-n", "k8s.io"]) == ["p1"]


def test_complete_state_from_env_and_config(
    node: Node, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(node)
    monkeypatch.setenv("SHIMCTL_STATE", str(node.state))
    assert _complete(node, ["delete"]) == ["c1", "c2"]
    monkeypatch.delenv("SHIMCTL_STATE")
    config = node.base / "config.toml"
    config.write_text(f'state = "{node.state}"\n')
    assert _complete(node, ["--config", str(config), "delete"]) == ["c1", "c2"]


@pytest.mark.parametrize("problem", ["missing", "file", "bad-config", "bad-namespace"])
def test_completion_never_raises(
    node: Node, clean_env: None, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    args: list[str]
    if problem == "missing":
        args = ["--state", str(node.base / "nowhere"), "delete"]
    elif problem == "file":
        (node.base / "f").write_text("x")
        args = ["--state", str(node.base / "f"), "-n", "x", "delete"]
    elif problem == "bad-config":
        config = node.base / "bad.toml"
        config.write_text("state = [unclosed\n")
        args = ["--config", str(config), "delete"]
    else:
        _tree(node)
        args = ["--state", str(node.state), "-n", "../default", "delete"]
    assert _complete(node, args) == []
    assert isinstance(_complete(node, [*args[:-1], "-n"]), list)


def test_zsh_script_autoloads() -> None:
    assert (REPO / "completions" / "_shimctl").read_text().startswith("#compdef shimctl\n")


@pytest.mark.parametrize(
    ("shell", "cword", "expected"),
    [
        ("bash", "4", ["plain,c1", "plain,c2"]),
        ("zsh", "4", ["plain", "c1", "_", "plain", "c2", "_"]),
        ("fish", "", ["plain,c1", "plain,c2"]),
    ],
)
def test_completion_end_to_end(node: Node, shell: str, cword: str, expected: list[str]) -> None:
    """The protocol the committed scripts speak: the program answers `_SHIMCTL_COMPLETE`."""
    _tree(node)
    env = {**node.env(), "_SHIMCTL_COMPLETE": f"{shell}_complete", "COMP_CWORD": cword}
    env["COMP_WORDS"] = f"shimctl --state {node.state} delete "
    code = "from shimctl.cli.app import main; main(prog_name='shimctl')"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected
    assert proc.stderr == ""


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish not installed")
def test_fish_script_completes(node: Node, tmp_path: Path) -> None:
    """The committed fish script, sourced in fish, completes ids (click 8.4's own does not)."""
    _tree(node)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim = bindir / "shimctl"
    shim.write_text(
        f"#!{sys.executable}\nfrom shimctl.cli.app import main\nmain(prog_name='shimctl')\n"
    )
    shim.chmod(0o755)
    script = REPO / "completions" / "shimctl.fish"
    cmd = f'source {script}; complete -C "shimctl --state {node.state} delete "'
    env = {**node.env(), "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        ["fish", "--no-config", "-c", cmd],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["c1", "c2"]
    assert proc.stderr == ""
