"""deploy/: the systemd units, the cron.d file and the Kubernetes DaemonSet are valid and run
`gc` with metrics for node_exporter, with the host paths shimctl needs (the CRI layout the field
tests run on); the Prometheus alert rules pass promtool and agree with the schedule. The rules'
behaviour, fed from real gc runs, is tested in tests/real/test_alerts.py."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shimctl.cli.app import main
from shimctl.errors import ExitCode
from shimctl.ops import metrics
from tests.support import promtool
from tests.support.cri_layout import HOST

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEXTFILE_DIR = "/var/lib/node_exporter/textfile_collector"
METRICS = f"{TEXTFILE_DIR}/shimctl.prom"
RULES = DEPLOY / "prometheus" / "shimctl-rules.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "shimctl-prometheusrule.yaml"
#: The alerts the fleet needs (deploy/README.md lists them).
ALERTS = {
    "ShimctlGcFailing",
    "ShimctlGcNotRunning",
    "ContainerdShimsKeepLeaking",
    "ContainerdShimsHung",
    "ContainerdTasksOrphaned",
    "ShimctlOwnerUnknown",
}


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


def run_with_fake_shimctl(shell: str, tmp_path: Path) -> Path:
    """Run a schedule's shell text with the metrics dir moved under tmp_path (missing) and a fake
    `shimctl` first on PATH that fails unless its --metrics-file's directory exists: the text
    must make the directory before gc runs. Returns the metrics dir."""
    textfile_dir = tmp_path / "var/lib/node_exporter/textfile_collector"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    fake = bin_dir / "shimctl"
    fake.write_text(
        "#!/bin/sh\n"
        'while [ $# -gt 0 ]; do [ "$1" = --metrics-file ] && f=$2; shift; done\n'
        'test -d "$(dirname "$f")" && echo ran > "$f.ran"\n'
    )
    fake.chmod(0o755)
    assert not textfile_dir.exists()
    script = shell.replace(TEXTFILE_DIR, str(textfile_dir)).replace("/usr/local/bin/", "")
    proc = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert (textfile_dir / "shimctl.prom.ran").read_text() == "ran\n"
    return textfile_dir


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
    # The metrics dir is made before gc: ExecStartPre lines run first, in order.
    run_with_fake_shimctl(
        " && ".join([*unit_values(service, "ExecStartPre"), exec_start]), tmp_path / "run"
    )
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


def test_cron_d_file(tmp_path: Path) -> None:
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
    check_gc_argv(shlex.split(command.split("&&")[-1]))
    run_with_fake_shimctl(command, tmp_path)  # the metrics dir is made before gc


def _daemonset() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    docs = list(
        yaml.safe_load_all((DEPLOY / "kubernetes" / "shimctl-gc-daemonset.yaml").read_text())
    )
    assert len(docs) == 1
    doc: dict[str, Any] = docs[0]
    return doc


def test_kubernetes_daemonset(tmp_path: Path) -> None:
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
    # One round of the loop: the metrics dir is made before gc (hostPath's DirectoryOrCreate
    # makes it only when the pod starts).
    one_round = script.replace("while true; do", "").replace("sleep 900", "").replace("done", "")
    run_with_fake_shimctl(one_round, tmp_path)


def test_daemonset_mounts_the_cri_layout() -> None:
    """Every host path of a CRI node (the list the field harness runs containerd on) is inside a
    writable mount of the same host path; shimctl is pointed at the same root, state, socket."""
    ds = _daemonset()
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [
        (m["mountPath"].rstrip("/"), volumes[m["name"]]["hostPath"]["path"].rstrip("/"), m)
        for m in container["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    ]
    for what, path in HOST.paths().items():
        covering = [
            (mount_path, mount)
            for mount_path, host, mount in mounts
            if (path == mount_path or path.startswith(mount_path + "/")) and host == mount_path
        ]
        assert covering, f"{what} {path}: no hostPath mount of it at the same path"
        # The deepest mount decides what the pod sees there.
        _, mount = max(covering, key=lambda c: len(c[0]))
        assert not mount.get("readOnly"), f"{what} {path} is mounted read-only"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SHIMCTL_ROOT"] == HOST.root
    assert env["SHIMCTL_STATE"] == HOST.state
    assert env["SHIMCTL_ADDRESS"] == HOST.address


def _period_seconds() -> set[int]:
    """The gc period of each schedule in deploy/: the timer, the cron line, the DaemonSet."""
    timer = DEPLOY / "systemd" / "shimctl-gc.timer"
    (on_active,) = unit_values(timer, "OnUnitActiveSec")
    assert on_active.endswith("min"), on_active
    cron_line = next(
        line
        for line in (DEPLOY / "cron.d" / "shimctl-gc").read_text().splitlines()
        if "shimctl gc" in line and not line.startswith("#")
    )
    minute = cron_line.split()[0]
    assert minute.startswith("*/"), minute
    (container,) = _daemonset()["spec"]["template"]["spec"]["containers"]
    (sleep,) = [line.split()[1] for line in container["args"][0].splitlines() if "sleep" in line]
    return {int(on_active[: -len("min")]) * 60, int(minute[2:]) * 60, int(sleep)}


def _rules() -> dict[str, dict[str, Any]]:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def _minutes(duration: str) -> int:
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def test_alert_rules_match_the_schedule() -> None:
    """The rules count in gc periods: a value stands one period, `for:` spans two runs, "not
    run" is two periods."""
    (period,) = _period_seconds()  # one period for every schedule
    rules = _rules()
    assert set(rules) == ALERTS
    assert f"> {2 * period}" in rules["ShimctlGcNotRunning"]["expr"]
    for name in ("ShimctlGcFailing", "ContainerdShimsHung", "ContainerdTasksOrphaned"):
        assert period < _minutes(rules[name]["for"]) * 60 < 2 * period, name
    assert period < _minutes(rules["ShimctlOwnerUnknown"]["for"]) * 60 < 2 * period
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert {"summary", "description"} <= rule["annotations"].keys()


def test_alert_rules_use_only_metrics_gc_writes() -> None:
    """A metric, source or kind renamed or dropped in shimctl breaks the rules: caught here."""
    import re

    from shimctl.models.findings import Kind

    written = set(
        re.findall(r"^# TYPE (\S+) ", metrics.exposition(None, now=1.0, version="1"), re.M)
    )
    for name, rule in _rules().items():
        used = set(re.findall(r"\bshimctl_[a-z_]+", rule["expr"]))
        assert used and used <= written, (name, used - written)
        for label_value in re.findall(r'source="([^"]+)"', rule["expr"]):
            assert label_value in metrics.OWNER_SOURCES, name
        for kind in re.findall(r'kind="([^"]+)"', rule["expr"]):
            assert kind in set(Kind), name


def test_prometheus_rule_is_the_rules_file() -> None:
    yaml = pytest.importorskip("yaml")
    (doc,) = list(yaml.safe_load_all(PROMETHEUS_RULE.read_text()))
    assert doc["apiVersion"] == "monitoring.coreos.com/v1" and doc["kind"] == "PrometheusRule"
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
    assert doc["spec"] == yaml.safe_load(RULES.read_text())


def test_promtool_checks_both_rule_files(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    out = promtool.run("check", "rules", str(RULES))
    assert f"SUCCESS: {len(ALERTS)} rules found" in out, out
    # promtool reads plain rule files: the PrometheusRule's spec, on its own.
    (doc,) = list(yaml.safe_load_all(PROMETHEUS_RULE.read_text()))
    spec = tmp_path / "prometheusrule-spec.yml"
    spec.write_text(yaml.safe_dump(doc["spec"]))
    out = promtool.run("check", "rules", str(spec))
    assert f"SUCCESS: {len(ALERTS)} rules found" in out, out


def test_promtool_checks_every_metrics_family() -> None:
    """Every family gc writes (the last success too) passes promtool's lint, with no problem
    reported (a real gc run's file is checked in tests/real/test_alerts.py)."""
    from shimctl.models.findings import Action, Finding, Kind, Mode, Outcome
    from shimctl.reconcile.run import summarize

    found = [
        Finding(Kind.LEAKED, "k8s.io", "a", "/s/a", "r", Action.DELETE_TASK, outcome=Outcome.DONE),
        Finding(Kind.DEAD, "moby", "b", "/s/b", "r", Action.DELETE_DEAD, outcome=Outcome.FAILED),
    ]
    text = metrics.exposition(
        summarize(Mode.GC, False, found, 0.5), now=2.0, version="1", previous_success=1.0
    )
    assert "shimctl_gc_last_success_timestamp_seconds 1" in text
    assert promtool.run("check", "metrics", stdin=text).strip() == ""


def _readme_ci_blocks() -> dict[str, str]:
    """The code blocks of the README's CI section, by language."""
    text = (DEPLOY.parent / "README.md").read_text()
    section = text.split("\n## In a CI pipeline", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for chunk in section.split("```")[1::2]:
        lang, _, body = chunk.partition("\n")
        blocks[lang] = body
    return blocks


def _parses_as_gc_with_exit_code(argv: list[str]) -> None:
    at = argv.index("gc")
    assert Path(argv[at - 1]).name == "shimctl", argv
    gc = main.get_command(main.make_context("shimctl", ["gc"]), "gc")
    assert gc is not None
    assert gc.make_context("gc", argv[at + 1 :]).params["exit_code"] is True


@pytest.mark.parametrize(
    ("gc_exit", "step_exit"),
    [
        (ExitCode.OK, 0),
        (ExitCode.GARBAGE_FOUND, 1),
        (ExitCode.ACTIONS_FAILED, ExitCode.ACTIONS_FAILED),
    ],
)
def test_readme_ci_shell_step(tmp_path: Path, gc_exit: int, step_exit: int) -> None:
    """The README's shell step passes a clean node, fails the job on garbage (cleaned), and
    passes a cleaning failure on as it is; `shimctl` here is a stand-in exiting `gc_exit`."""
    script = _readme_ci_blocks()["sh"]
    (gc_line,) = [line for line in script.splitlines() if "--exit-code" in line]
    _parses_as_gc_with_exit_code(shlex.split(gc_line.split(";")[1].split("||")[0]))
    fake = tmp_path / "shimctl"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\nexit {int(gc_exit)}\n')
    fake.chmod(0o755)
    proc = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == step_exit, proc.stderr
    assert "--exit-code" in (tmp_path / "argv").read_text()
    assert (proc.stderr != "") == (gc_exit != ExitCode.OK)


def test_readme_ci_github_actions_step() -> None:
    yaml = pytest.importorskip("yaml")
    (step,) = yaml.safe_load(_readme_ci_blocks()["yaml"])
    assert step["if"] == "always()"  # cleans after failed steps too
    _parses_as_gc_with_exit_code(shlex.split(step["run"]))
