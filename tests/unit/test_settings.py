"""Settings: flags > SHIMCTL_* env > containerd config.toml > defaults (shimctl.settings, CLI)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shimctl import settings as settings_mod
from shimctl.errors import ExitCode, InvalidArgument
from shimctl.settings import (
    DEFAULT_ADDRESS,
    DEFAULT_ROOT,
    DEFAULT_STATE,
    Timeouts,
    build_settings,
    parse_duration,
    read_containerd_config,
)
from tests.support.helpers import Node

FULL_CONFIG = """
version = 2
root = "/cfg/root"
state = "/cfg/state"

[grpc]
  address = "unix:///cfg/containerd.sock"

[ttrpc]
  address = "/cfg/other.ttrpc"

[timeouts]
  "io.containerd.timeout.shim.load" = "1m30s"
  "io.containerd.timeout.shim.cleanup" = "250ms"
  "io.containerd.timeout.shim.shutdown" = "5s"
  "io.containerd.timeout.task.state" = "junk, but not ours"

[plugins."io.containerd.runtime.v2.task"]
  sched_core = true
"""


def _cfg(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("1.5h", 5400.0),
        ("2h45m", 9900.0),
        ("10us", 1e-5),
        ("10µs", 1e-5),  # micro sign
        ("10μs", 1e-5),  # Greek mu
        ("100ns", 1e-7),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("+5s", 5.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("3", 3.0),  # a plain number is seconds
        ("2.5", 2.5),
        (" 5m ", 300.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "5x",
        "5 s",
        "1m 30s",
        "-5s",
        "-1",
        "nan",
        "inf",
        "1e3",
        "5ss",
        ".s",
        "٣s",
        "9" * 400,
    ],
    ids=lambda t: t[:12],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration(text)
    assert str(info.value) == f"invalid duration {text.strip()!r}"
    assert info.value.hint


# -- containerd's config ------------------------------------------------------------------------


def test_read_full_config(tmp_path: Path) -> None:
    cfg = read_containerd_config(_cfg(tmp_path, FULL_CONFIG))
    assert cfg.root == "/cfg/root"
    assert cfg.state == "/cfg/state"
    assert cfg.address == "unix:///cfg/containerd.sock"
    assert cfg.ttrpc_address == "/cfg/other.ttrpc"
    assert cfg.sched_core is True
    assert cfg.timeouts == {"load": 90.0, "cleanup": 0.25, "shutdown": 5.0}


def test_missing_config_is_empty(tmp_path: Path) -> None:
    cfg = read_containerd_config(tmp_path / "nope.toml")
    assert cfg == settings_mod.ContainerdConfig()


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _cfg(tmp_path, 'root = "/x"\n[grpc\n')
    with pytest.raises(InvalidArgument) as info:
        read_containerd_config(path)
    assert str(info.value).startswith(f"containerd config {path} is not valid TOML: ")
    assert info.value.exit_code == ExitCode.INVALID_ARGUMENT


def test_non_utf8_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'root = "/caf\xe9"\n')
    with pytest.raises(InvalidArgument, match=f"containerd config {path} is not valid TOML"):
        read_containerd_config(path)


@pytest.mark.parametrize("kind", ["directory", "under-a-file"])
def test_unreadable_config_names_the_file(tmp_path: Path, kind: str) -> None:
    # We run as root, so modes do not stop a read: use paths that cannot be read as files.
    if kind == "directory":
        path = tmp_path / "dir.toml"
        path.mkdir()
    else:
        (tmp_path / "file").write_text("")
        path = tmp_path / "file" / "config.toml"
    with pytest.raises(InvalidArgument) as info:
        read_containerd_config(path)
    assert str(info.value).startswith(f"cannot read containerd config {path}: ")
    assert info.value.hint == "pass --config with a readable file"


def test_bad_duration_names_the_file(tmp_path: Path) -> None:
    path = _cfg(tmp_path, '[timeouts]\n"io.containerd.timeout.shim.load" = "5 parsecs"\n')
    with pytest.raises(InvalidArgument) as info:
        read_containerd_config(path)
    assert str(info.value) == (
        f"containerd config {path}: timeouts 'io.containerd.timeout.shim.load': "
        "invalid duration '5 parsecs'"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("root = 5\n", "root must be a string"),
        ('[grpc]\naddress = ["/a"]\n', "grpc.address must be a string"),
        ('grpc = "x"\n', "[grpc] must be a table"),
        ("timeouts = 5\n", "[timeouts] must be a table"),
        ("plugins = []\n", "[plugins] must be a table"),
        ('[timeouts]\n"io.containerd.timeout.shim.load" = true\n', "must be a duration"),
    ],
)
def test_wrong_types_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _cfg(tmp_path, text)
    with pytest.raises(InvalidArgument) as info:
        read_containerd_config(path)
    assert str(info.value).startswith(f"containerd config {path}: ")
    assert message in str(info.value)


def test_empty_strings_count_as_unset(tmp_path: Path) -> None:
    path = _cfg(tmp_path, 'root = ""\n[grpc]\naddress = ""\n[ttrpc]\naddress = ""\n')
    s = build_settings(config=path)
    assert s.root == Path("/var/lib/containerd")
    assert s.address == DEFAULT_ADDRESS
    assert s.ttrpc_address == DEFAULT_ADDRESS + ".ttrpc"


# -- build_settings: precedence -----------------------------------------------------------------


def test_defaults_without_config(tmp_path: Path) -> None:
    s = build_settings(config=tmp_path / "missing.toml", publish_binary="/usr/bin/containerd")
    assert s.root == Path("/var/lib/containerd")
    assert s.state == Path("/run/containerd")
    assert s.task_root == Path("/var/lib/containerd/io.containerd.runtime.v2.task")
    assert s.task_state == Path("/run/containerd/io.containerd.runtime.v2.task")
    assert s.address == "/run/containerd/containerd.sock"
    assert s.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert s.namespace == "default"
    assert s.namespace_given is False
    assert s.sched_core is False
    assert s.debug is False
    assert s.timeouts == Timeouts(load=5.0, cleanup=5.0, shutdown=3.0, start=30.0)
    assert s.socket_dir == Path("/run/containerd/s")


def test_config_over_defaults(tmp_path: Path) -> None:
    s = build_settings(config=_cfg(tmp_path, FULL_CONFIG), publish_binary="/x/containerd")
    assert s.root == Path("/cfg/root")
    assert s.state == Path("/cfg/state")
    assert s.address == "/cfg/containerd.sock"  # unix:// stripped
    assert s.ttrpc_address == "/cfg/other.ttrpc"
    assert s.sched_core is True
    assert s.timeouts == Timeouts(load=90.0, cleanup=0.25, shutdown=5.0, start=30.0)


def test_explicit_values_over_config(tmp_path: Path) -> None:
    s = build_settings(
        config=_cfg(tmp_path, FULL_CONFIG),
        root="/flag/root",
        state="/flag/state",
        namespace="k8s.io",
        address="unix:///flag/c.sock",
        ttrpc_address="unix:///flag/t.sock",
        publish_binary="/flag/containerd",
        debug=True,
        timeout=7.5,
    )
    assert s.root == Path("/flag/root")
    assert s.state == Path("/flag/state")
    assert s.namespace == "k8s.io"
    assert s.namespace_given is True
    assert s.address == "/flag/c.sock"
    assert s.ttrpc_address == "/flag/t.sock"
    assert s.publish_binary == "/flag/containerd"
    assert s.debug is True
    # --timeout bounds the calls to shims; the shutdown wait stays the config's.
    assert s.timeouts == Timeouts(load=7.5, cleanup=7.5, shutdown=5.0, start=30.0)


@pytest.mark.parametrize(
    ("field", "config_text", "flag", "from_config", "from_flag", "default"),
    [
        (
            "root",
            'root = "/cfg/r"\n',
            "/flag/r",
            Path("/cfg/r"),
            Path("/flag/r"),
            Path(DEFAULT_ROOT),
        ),
        (
            "state",
            'state = "/cfg/s"\n',
            "/flag/s",
            Path("/cfg/s"),
            Path("/flag/s"),
            Path(DEFAULT_STATE),
        ),
        (
            "address",
            '[grpc]\naddress = "unix:///cfg/a.sock"\n',
            "unix:///flag/a.sock",
            "/cfg/a.sock",
            "/flag/a.sock",
            DEFAULT_ADDRESS,
        ),
        (
            "ttrpc_address",
            '[ttrpc]\naddress = "/cfg/t.sock"\n',
            "/flag/t.sock",
            "/cfg/t.sock",
            "/flag/t.sock",
            DEFAULT_ADDRESS + ".ttrpc",
        ),
    ],
)
def test_precedence_per_field(
    tmp_path: Path,
    field: str,
    config_text: str,
    flag: str,
    from_config: object,
    from_flag: object,
    default: object,
) -> None:
    """Each value on its own: an explicit one (flag or env, resolved by click) beats the
    config file, which beats the default; an empty explicit value counts as unset."""
    cfg = _cfg(tmp_path, config_text)
    missing = tmp_path / "missing.toml"
    assert getattr(build_settings(config=missing, publish_binary="/x"), field) == default
    assert getattr(build_settings(config=cfg, publish_binary="/x"), field) == from_config
    # build_settings types each keyword; the parametrized field's value is one of them.
    flags: dict[str, Any] = {field: flag}
    explicit = build_settings(config=cfg, publish_binary="/x", **flags)
    assert getattr(explicit, field) == from_flag
    unset: dict[str, Any] = {field: ""}
    empty = build_settings(config=cfg, publish_binary="/x", **unset)
    assert getattr(empty, field) == from_config


def test_ttrpc_defaults_to_the_final_address(tmp_path: Path) -> None:
    only_grpc = _cfg(tmp_path, '[grpc]\naddress = "unix:///cfg/g.sock"\n')
    s = build_settings(config=only_grpc, publish_binary="/x")
    assert s.ttrpc_address == "/cfg/g.sock.ttrpc"
    s = build_settings(config=only_grpc, address="/flag/g.sock", publish_binary="/x")
    assert s.address == "/flag/g.sock"
    assert s.ttrpc_address == "/flag/g.sock.ttrpc"
    s = build_settings(config=only_grpc, address="unix:///flag/g.sock", publish_binary="/x")
    assert s.ttrpc_address == "/flag/g.sock.ttrpc"


def test_config_ttrpc_is_kept_when_the_address_is_given(tmp_path: Path) -> None:
    s = build_settings(config=_cfg(tmp_path, FULL_CONFIG), address="/a.sock", publish_binary="/x")
    assert s.ttrpc_address == "/cfg/other.ttrpc"


def test_relative_dirs_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = build_settings(config=tmp_path / "none", root="r", state="./s/../st", publish_binary="/x")
    assert s.root == tmp_path / "r"
    assert s.state == tmp_path / "st"


def test_nul_in_dir_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="--root must be a directory path"):
        build_settings(config=tmp_path / "none", root="/a\0b", publish_binary="/x")


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_bad_timeout(tmp_path: Path, value: float) -> None:
    with pytest.raises(InvalidArgument, match="--timeout must be a positive number of seconds"):
        build_settings(config=tmp_path / "none", timeout=value, publish_binary="/x")


def test_invalid_config_fails_build(tmp_path: Path) -> None:
    path = _cfg(tmp_path, "root = \n")
    with pytest.raises(InvalidArgument, match=f"containerd config {path} is not valid TOML"):
        build_settings(config=path, root="/flag/root", publish_binary="/x")


def test_with_namespace(tmp_path: Path) -> None:
    s = build_settings(config=tmp_path / "none", publish_binary="/x")
    t = s.with_namespace("other")
    assert (t.namespace, s.namespace) == ("other", "default")


def test_default_publish_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "containerd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    assert build_settings(config=tmp_path / "none").publish_binary == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "argv", ["relative/shimctl"])
    monkeypatch.chdir(tmp_path)
    assert settings_mod.default_publish_binary() == str(tmp_path / "relative" / "shimctl")


# -- through the CLI ----------------------------------------------------------------------------

FAKE_SHIM = """#!/bin/sh
{{
  printf 'argv=%s\\n' "$*"
  printf 'cwd=%s\\n' "$(pwd -P)"
  printf 'work=%s\\n' "$(readlink work)"
  printf 'ttrpc=%s\\n' "$TTRPC_ADDRESS"
}} > {record}
printf 'fake shim: refusing to start' >&2
exit 1
"""


def _fake_shim(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "record.txt"
    shim = tmp_path / "fake-shim"
    shim.write_text(FAKE_SHIM.format(record=record))
    shim.chmod(0o755)
    return shim, record


def _record(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def _shimctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shimctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _clean_env(node: Node) -> dict[str, str]:
    env = node.env()
    del env["SHIMCTL_CONFIG"]
    return env


def test_cli_takes_root_state_and_addresses_from_config(tmp_path: Path, node: Node) -> None:
    shim, record = _fake_shim(tmp_path)
    cfg = _cfg(
        tmp_path,
        f'root = "{node.root}"\nstate = "{node.state}"\n'
        f'[grpc]\naddress = "unix://{node.address}"\n',
    )
    res = _shimctl(["--config", str(cfg), "start", "c1", "--runtime", str(shim)], _clean_env(node))
    assert res.returncode == ExitCode.UNKNOWN, res.stderr
    assert "shimctl: error: start failed: fake shim: refusing to start: exit status 1" in (
        res.stderr
    )
    seen = _record(record)
    assert seen["cwd"] == str(node.bundle("c1"))
    assert seen["work"] == str(node.workdir("c1"))
    assert f"-address {node.address} " in seen["argv"]
    assert seen["ttrpc"] == node.address + ".ttrpc"
    # The failed start removed what it created.
    assert not node.bundle("c1").exists()
    assert not node.workdir("c1").exists()


def test_cli_precedence_flag_over_env_over_config(tmp_path: Path, node: Node) -> None:
    shim, record = _fake_shim(tmp_path)
    other = Node.under(tmp_path / "other")
    cfg = _cfg(
        tmp_path,
        f'root = "{other.root}"\nstate = "{other.state}"\n'
        f'[grpc]\naddress = "{other.address}"\n[ttrpc]\naddress = "/cfg/ttrpc.sock"\n',
    )
    env = _clean_env(node)
    env.update(
        SHIMCTL_CONFIG=str(cfg),
        SHIMCTL_STATE=str(node.state),  # env over config
        SHIMCTL_ROOT=str(other.root / "env-root"),  # overridden by the flag below
        SHIMCTL_NAMESPACE="envns",
    )
    res = _shimctl(
        ["--root", str(node.root), "start", "c2", "--runtime", str(shim)],
        env,
    )
    assert res.returncode == ExitCode.UNKNOWN, res.stderr
    seen = _record(record)
    assert seen["cwd"] == str(node.bundle("c2", "envns"))
    assert seen["work"] == str(node.workdir("c2", "envns"))
    assert f"-namespace envns -address {other.address} " in seen["argv"]
    assert seen["ttrpc"] == "/cfg/ttrpc.sock"
    assert not (other.root / "env-root").exists()
    assert not os.listdir(other.state)


def test_cli_address_precedence_flag_over_env_over_config(tmp_path: Path, node: Node) -> None:
    """The address the shim is told (and hashes into its socket name) follows the same order."""
    shim, record = _fake_shim(tmp_path)
    cfg = _cfg(tmp_path, '[grpc]\naddress = "unix:///cfg/grpc.sock"\n')
    env = _clean_env(node)
    env.update(SHIMCTL_CONFIG=str(cfg), SHIMCTL_ADDRESS="unix:///env/grpc.sock")
    base = ["--root", str(node.root), "--state", str(node.state)]
    start = ["start", "a1", "--runtime", str(shim)]

    assert _shimctl([*base, *start], env).returncode == 1
    seen = _record(record)
    assert "-address /env/grpc.sock " in seen["argv"]
    assert seen["ttrpc"] == "/env/grpc.sock.ttrpc"

    res = _shimctl([*base, "--address", "/flag/grpc.sock", *start], env)
    assert res.returncode == 1, res.stderr
    seen = _record(record)
    assert "-address /flag/grpc.sock " in seen["argv"]
    assert seen["ttrpc"] == "/flag/grpc.sock.ttrpc"

    del env["SHIMCTL_ADDRESS"]
    assert _shimctl([*base, *start], env).returncode == 1
    assert "-address /cfg/grpc.sock " in _record(record)["argv"]


def test_cli_bad_config_exit_code(tmp_path: Path, node: Node) -> None:
    cfg = _cfg(tmp_path, '[timeouts]\n"io.containerd.timeout.shim.load" = "soon"\n')
    res = _shimctl(["--config", str(cfg), "list"], _clean_env(node))
    assert res.returncode == ExitCode.INVALID_ARGUMENT
    assert res.stdout == ""
    assert res.stderr.startswith(f"shimctl: error: containerd config {cfg}: timeouts ")


def test_cli_missing_config_is_fine(tmp_path: Path, node: Node) -> None:
    res = _shimctl(
        [*node.cli_args(), "--config", str(tmp_path / "absent.toml"), "delete", "nope"],
        _clean_env(node),
    )
    assert res.returncode == ExitCode.NOT_FOUND
    assert "no bundle for task 'nope'" in res.stderr
