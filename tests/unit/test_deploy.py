"""deploy/: the systemd units, the cron.d file and the Kubernetes DaemonSet are valid and run
`gc` with metrics for node_exporter, with the host paths shimctl needs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shimctl.cli.app import main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"
METRICS = f"{TEXTFILE_DIR}/shimctl.prom"


def check_gc_argv(argv: list[str]) -> None:
    """The shimctl command line parses with our click app and writes metrics."""
    assert Path(argv[0]).name == "shimctl", argv
    assert "gc" in argv
    assert argv[argv.index("--metrics-file") + 1] == METRICS
    at = argv.index("gc")
    # Global options, then gc's own: both must parse (an unknown option raises).
    root = main.make_context("shimctl", [*argv[1:at], "gc"])
    gc = main.get_command(root, "gc")
    assert gc is not None
    assert gc.make_context("gc", argv[at + 1 :]).params["metrics_file"] == METRICS


def unit_values(path: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in path.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_systemd_units(tmp_path: Path) -> None:
    service = DEPLOY / "systemd" / "shimctl-gc.service"
    timer = DEPLOY / "systemd" / "shimctl-gc.timer"
    (exec_start,) = unit_values(service, "ExecStart")
    check_gc_argv(shlex.split(exec_start))
    assert unit_values(service, "Type") == ["oneshot"]
    assert unit_values(timer, "OnUnitActiveSec") and unit_values(timer, "WantedBy")
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    # verify needs ExecStart to exist: point it at this machine's shimctl (or any executable).
    exe = shutil.which("shimctl") or "/bin/true"
    (tmp_path / service.name).write_text(service.read_text().replace("/usr/local/bin/shimctl", exe))
    shutil.copy(timer, tmp_path / timer.name)
    units = (service, timer)
    proc = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u.name) for u in units)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # unknown keys are only warnings


def test_cron_d_file() -> None:
    path = DEPLOY / "cron.d" / "shimctl-gc"
    assert "." not in path.name  # cron skips files in /etc/cron.d with a dot in the name
    text = path.read_text()
    assert text.endswith("\n")  # cron ignores a last line without a newline
    jobs = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(jobs) == 1
    fields = jobs[0].split(None, 6)
    minute, hour, dom, month, dow, user, command = fields
    for field, (lo, hi) in zip(
        (minute, hour, dom, month, dow), ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7)), strict=True
    ):
        for part in field.split(","):
            base, _, step = part.partition("/")
            assert step == "" or step.isdigit()
            if base != "*":
                for n in base.split("-"):
                    assert lo <= int(n) <= hi, field
    assert user == "root"
    check_gc_argv(shlex.split(command))


def _daemonset() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    docs = list(
        yaml.safe_load_all((DEPLOY / "kubernetes" / "shimctl-gc-daemonset.yaml").read_text())
    )
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


def test_kubernetes_daemonset() -> None:
    ds = _daemonset()
    assert ds["apiVersion"] == "apps/v1" and ds["kind"] == "DaemonSet"
    spec = ds["spec"]["template"]["spec"]
    assert (
        ds["spec"]["selector"]["matchLabels"].items()
        <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert spec["hostPID"] is True
    (container,) = spec["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for m in container["volumeMounts"]:
        assert m["name"] in volumes, m
    host_path = {m["mountPath"]: volumes[m["name"]]["hostPath"]["path"] for m in mounts.values()}
    # The host's containerd dirs at the same paths (bundles hold absolute links and addresses).
    for path in ("/var/lib/containerd", "/run/containerd", TEXTFILE_DIR):
        assert host_path.get(path) == path, path
    for path in ("/var/lib/containerd", "/run/containerd"):
        assert mounts[path]["mountPropagation"] == "Bidirectional"
        assert not mounts[path].get("readOnly")
    # The shim socket dir is inside a mount of the same host path.
    assert any(
        "/run/containerd/s".startswith(p.rstrip("/") + "/") and host_path[p] == p for p in mounts
    )
    assert mounts["/etc/containerd"]["readOnly"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SHIMCTL_ROOT"] == "/var/lib/containerd"
    assert env["SHIMCTL_STATE"] == "/run/containerd"
    script = container["args"][0].replace("\\\n", " ")
    gc_line = next(line for line in script.splitlines() if "shimctl gc" in line)
    check_gc_argv(shlex.split(gc_line))
