"""`shimctl version` and `shimctl doctor`; every `--json` document validates against the
schema published in docs/json-schema.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shimctl import __version__
from shimctl.errors import ExitCode
from tests.support.helpers import Node, run_cli
from tests.support.tasks import Started
from tools import docgen


def validate(doc: Any, command: str) -> None:
    jsonschema.validate(doc, docgen.result_schema(command))


def cli(node: Node, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "shimctl", *node.cli_args(), *args],
        env=env or node.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc


def test_version_reports_everything(node: Node) -> None:
    proc = run_cli(node, "version", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    validate(doc, "version")
    res = doc["result"]
    assert res["shimctl"] == __version__
    assert res["python"].endswith(".".join(map(str, sys.version_info[:3])))
    if res["containerd"]["path"]:
        assert res["containerd"]["version"], res["containerd"]
    text = run_cli(node, "version").stdout
    assert text.splitlines()[0].split() == ["shimctl:", __version__]
    assert run_cli(node, "--version").stdout == f"shimctl, version {__version__}\n"


def test_version_tolerates_missing_and_broken_programs(node: Node, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    broken = bindir / "containerd"
    broken.write_text("#!/bin/sh\necho garbage\nexit 3\n")
    broken.chmod(0o755)
    # A bundle naming a runtime that is gone.
    bundle = node.bundle("v1")
    bundle.mkdir(parents=True)
    (bundle / "shim-binary-path").write_text("/nonexistent/containerd-shim-x-v9")
    env = {**node.env(), "PATH": str(bindir)}
    proc = cli(node, "--publish-binary", str(broken), "version", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    validate(doc, "version")
    c = doc["result"]["containerd"]
    assert c["version"] is None and "unrecognised version output (exit 3)" in c["error"]
    shims = {s["name"]: s for s in doc["result"]["shims"]}
    assert shims["io.containerd.runc.v2"]["path"] is None
    assert "not installed" in shims["io.containerd.runc.v2"]["error"]
    assert "does not exist" in shims["/nonexistent/containerd-shim-x-v9"]["error"]
    env["PATH"] = str(tmp_path / "empty")
    proc = cli(node, "version", env=env)
    assert proc.returncode == 0
    assert "containerd:" in proc.stdout and "not found: containerd is not on PATH" in proc.stdout


def test_doctor_on_a_fresh_node(node: Node) -> None:
    # -n: the shared shim socket dir may hold other tests' dead sockets (garbage: a warning).
    proc = run_cli(node, "-n", "default", "doctor", "--json")
    doc = json.loads(proc.stdout)
    validate(doc, "doctor")
    checks = {c["name"]: c for c in doc["result"]["checks"]}
    # Dirs exist, plugin dirs not yet: warnings, not failures.
    assert checks["state dir"]["status"] == "warn"
    assert checks["containerd"]["status"] == "warn" and checks["containerd"]["fix"]
    assert checks["shims"]["status"] == "ok"
    failed = [c for c in checks.values() if c["status"] == "fail"]
    assert proc.returncode == (ExitCode.FAILED_PRECONDITION if failed else ExitCode.OK), failed
    text = run_cli(node, "-n", "default", "doctor")
    assert "doctor: 11 checks" in text.stdout
    assert any(line.startswith("[warn] state dir") for line in text.stdout.splitlines())


def test_doctor_fails_on_missing_state_and_runtime(node: Node, tmp_path: Path) -> None:
    env = {**node.env(), "PATH": str(tmp_path)}
    proc = cli(node, "--state", str(tmp_path / "nowhere"), "doctor", env=env)
    assert proc.returncode == ExitCode.FAILED_PRECONDITION
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[FAIL] state dir") for line in lines)
    assert any(line.startswith("[FAIL] runtime io.containerd.runc.v2") for line in lines)
    assert any("fix: pass --state" in line for line in lines)
    assert proc.stderr == ""


@pytest.mark.real
def test_json_outputs_validate_and_doctor_sees_a_leak(node: Node, started: Started) -> None:
    start = run_cli(node, "start", "j1", "--json")
    assert start.returncode == 0, start.stderr
    doc = json.loads(start.stdout)
    validate(doc, "start")
    started.process(doc["result"]["shim_pid"])

    doctor = json.loads(run_cli(node, "-n", "default", "doctor", "--json").stdout)
    shims = next(c for c in doctor["result"]["checks"] if c["name"] == "shims")
    assert shims["status"] == "warn" and "1 leaked" in shims["detail"]
    assert "shimctl gc" in shims["fix"]

    listing = run_cli(node, "list", "--json")
    validate(json.loads(listing.stdout), "list")
    gc = run_cli(node, "-n", "default", "gc", "--dry-run", "--min-age", "0", "--json")
    validate(json.loads(gc.stdout), "gc")
    delete = run_cli(node, "delete", "j1", "--json")
    assert delete.returncode == 0, delete.stderr
    validate(json.loads(delete.stdout), "delete")
    events = run_cli(node, "events", "--json")
    validate(json.loads(events.stdout), "events")


def test_error_document_validates(node: Node) -> None:
    proc = run_cli(node, "delete", "missing", "--json")
    assert proc.returncode == ExitCode.NOT_FOUND
    jsonschema.validate(json.loads(proc.stdout), docgen.error_schema())
