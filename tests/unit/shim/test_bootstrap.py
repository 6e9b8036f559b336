"""Shim bootstrap params (bare address or JSON): shimctl.shim.bootstrap and Bundle.connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shimctl.errors import ExitCode, InvalidArgument, NotImplementedByShim
from shimctl.node.bundle import Bundle
from shimctl.settings import TASK_PLUGIN_DIR
from shimctl.shim.bootstrap import Bootstrap, parse_bootstrap
from tests.support.helpers import Node, run_cli

ADDR = "unix:///run/containerd/s/" + "ab" * 32


@pytest.mark.parametrize(
    "text",
    [ADDR, ADDR + "\n", f"  \t{ADDR}\r\n ", "\n" + ADDR],
)
def test_bare_address_is_trimmed(text: str) -> None:
    boot = parse_bootstrap(text, source="src")
    assert boot == Bootstrap(address=ADDR, version=2, protocol="ttrpc")
    assert not boot.is_json
    assert boot.task_service() == "containerd.task.v2.Task"


def test_abstract_and_spaced_addresses_are_kept() -> None:
    # Old shims used abstract sockets; anything but unix:// is one. Inner spaces are legal.
    assert parse_bootstrap("@containerd-shim/x.sock", source="s").address == (
        "@containerd-shim/x.sock"
    )
    assert parse_bootstrap("unix:///tmp/a b", source="s").address == "unix:///tmp/a b"


@pytest.mark.parametrize("version", [2, 3])
def test_json_params(version: int) -> None:
    doc = {"version": version, "address": ADDR, "protocol": "ttrpc"}
    boot = parse_bootstrap(" " + json.dumps(doc) + "\n", source="src")
    assert boot == Bootstrap(address=ADDR, version=version, protocol="ttrpc")
    assert boot.is_json is (version == 3)
    assert boot.task_service() == f"containerd.task.v{version}.Task"


def test_json_defaults_and_round_trip() -> None:
    boot = parse_bootstrap(json.dumps({"address": ADDR}), source="s")
    assert boot == Bootstrap(address=ADDR, version=2, protocol="ttrpc")
    three = Bootstrap(address=ADDR, version=3)
    assert json.loads(three.to_json()) == {"version": 3, "address": ADDR, "protocol": "ttrpc"}
    assert parse_bootstrap(three.to_json().decode(), source="s") == three


def test_version_4_is_not_implemented() -> None:
    with pytest.raises(NotImplementedByShim) as info:
        parse_bootstrap(json.dumps({"version": 4, "address": ADDR}), source="the output")
    assert str(info.value) == "the output: unsupported shim bootstrap version 4"
    assert info.value.exit_code == ExitCode.NOT_IMPLEMENTED
    assert info.value.hint


def test_grpc_protocol_is_not_implemented() -> None:
    doc = {"version": 3, "address": ADDR, "protocol": "grpc"}
    with pytest.raises(NotImplementedByShim) as info:
        parse_bootstrap(json.dumps(doc), source="src")
    assert str(info.value) == "src: unsupported shim protocol 'grpc'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "src holds no shim address"),
        ("  \n\t ", "src holds no shim address"),
        ("unix:///a\nunix:///b", "src holds no valid address"),
        ("io.containerd.runc.v2: boom\x1b[31m", "src holds no valid address"),
        ("unix:///a\x00", "src holds no valid address"),
        ("unix:///a\x7f", "src holds no valid address"),
        ("{not json", "src holds invalid bootstrap JSON"),
        ("{}", "src bootstrap params have no address"),
        ('{"address": ""}', "src bootstrap params have no address"),
        ('{"address": 5}', "src bootstrap params have no address"),
        ('{"version": "3", "address": "unix:///a"}', "src bootstrap version is not a number"),
        ('{"version": true, "address": "unix:///a"}', "src bootstrap version is not a number"),
        ('{"version": 3.0, "address": "unix:///a"}', "src bootstrap version is not a number"),
        ('{"version": 3, "address": "unix:///a\\n"}', "src holds no valid address"),
        ('{"version": 3, "address": " unix:///a"}', "src holds no valid address"),
        ('{"version": 3, "address": "unix:///\\u001b[2J"}', "src holds no valid address"),
    ],
)
def test_junk_is_invalid_argument(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_bootstrap(text, source="src")
    assert str(info.value).startswith(message)
    assert info.value.exit_code == ExitCode.INVALID_ARGUMENT


def test_json_array_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="invalid bootstrap JSON"):
        parse_bootstrap("{[1]}", source="s")


# -- Bundle.connection --------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    task_state = tmp_path / "state" / TASK_PLUGIN_DIR
    b = Bundle.locate(task_state, tmp_path / "root" / TASK_PLUGIN_DIR, "default", "c1")
    b.path.mkdir(parents=True)
    return b


def test_connection_none_without_files(bundle: Bundle) -> None:
    assert bundle.connection() is None
    (bundle.path / "address").write_text("")
    (bundle.path / "bootstrap.json").write_text("\n")
    assert bundle.connection() is None


def test_connection_reads_bare_address(bundle: Bundle) -> None:
    (bundle.path / "address").write_text(ADDR)
    assert bundle.connection() == Bootstrap(address=ADDR)


def test_connection_reads_json_in_address(bundle: Bundle) -> None:
    (bundle.path / "address").write_text(json.dumps({"version": 3, "address": ADDR}))
    assert bundle.connection() == Bootstrap(address=ADDR, version=3)


def test_connection_prefers_bootstrap_json(bundle: Bundle) -> None:
    other = "unix:///run/containerd/s/" + "cd" * 32
    (bundle.path / "address").write_text(ADDR)
    (bundle.path / "bootstrap.json").write_text(json.dumps({"version": 3, "address": other}))
    assert bundle.connection() == Bootstrap(address=other, version=3)


def test_connection_junk_names_the_file(bundle: Bundle) -> None:
    (bundle.path / "bootstrap.json").write_text('{"version": 3}')
    (bundle.path / "address").write_text(ADDR)
    with pytest.raises(InvalidArgument) as info:
        bundle.connection()
    assert str(info.value) == f"{bundle.path / 'bootstrap.json'} bootstrap params have no address"


def test_connection_version_4_in_file(bundle: Bundle) -> None:
    (bundle.path / "bootstrap.json").write_text(json.dumps({"version": 4, "address": ADDR}))
    with pytest.raises(NotImplementedByShim, match="unsupported shim bootstrap version 4"):
        bundle.connection()


def test_unknown_shim_generation_is_reported_never_deleted(node: Node) -> None:
    """A bundle whose bootstrap params are from a newer shim generation (version 4, or
    another protocol) is reported; gc and load never delete it; delete says NotImplemented."""
    for task_id, doc in (
        ("v4", {"version": 4, "address": "unix:///run/containerd/s/nope", "protocol": "ttrpc"}),
        ("grpc", {"version": 3, "address": "unix:///run/containerd/s/nope", "protocol": "grpc"}),
    ):
        bundle = node.bundle(task_id)
        (bundle / "rootfs").mkdir(parents=True)
        (bundle / "bootstrap.json").write_text(json.dumps(doc))
        (bundle / "shim-binary-path").write_text("/usr/bin/containerd-shim-runc-v2")
    for command in (["gc", "--min-age", "0"], ["load", "--force"]):
        proc = run_cli(node, "-n", "default", *command, "--json")
        assert proc.returncode == 0, proc.stderr
        found = {f["id"]: f for f in json.loads(proc.stdout)["result"]["findings"]}
        for task_id in ("v4", "grpc"):
            assert found[task_id]["kind"] == "unsafe", found[task_id]
            assert "upgrade shimctl" in found[task_id]["reason"]
            assert node.bundle(task_id).is_dir()
    proc = run_cli(node, "delete", "v4")
    assert proc.returncode == ExitCode.NOT_IMPLEMENTED and "version 4" in proc.stderr
    assert node.bundle("v4").is_dir()
