"""Where shimctl works and how long it waits: containerd's dirs, addresses and timeouts.

Precedence, highest first: command-line flags, SHIMCTL_* environment variables (both handled
by click in cli.py), containerd's config.toml (read here, only when present), defaults.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from shimctl.errors import FailedPrecondition, InvalidArgument, NotFound

TASK_PLUGIN_DIR = "io.containerd.runtime.v2.task"
DEFAULT_CONFIG = "/etc/containerd/config.toml"
DEFAULT_ROOT = "/var/lib/containerd"
DEFAULT_STATE = "/run/containerd"
DEFAULT_ADDRESS = "/run/containerd/containerd.sock"
DEFAULT_NAMESPACE = "default"
DEFAULT_RUNTIME = "io.containerd.runc.v2"
# Hard-coded in the shim library, whatever containerd's state dir is (layout.md §7).
SHIM_SOCKET_DIR = Path("/run/containerd/s")

_TIMEOUT_KEYS = {
    "io.containerd.timeout.shim.load": "load",
    "io.containerd.timeout.shim.cleanup": "cleanup",
    "io.containerd.timeout.shim.shutdown": "shutdown",
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds. Defaults are containerd's (manager.md §9); `start` bounds the shim's start verb."""

    load: float = 5.0
    cleanup: float = 5.0
    shutdown: float = 3.0
    start: float = 30.0


@dataclass(frozen=True)
class Settings:
    root: Path = Path(DEFAULT_ROOT)
    state: Path = Path(DEFAULT_STATE)
    namespace: str = DEFAULT_NAMESPACE
    # True when the user named a namespace; list/load/gc then stay inside it.
    namespace_given: bool = False
    address: str = DEFAULT_ADDRESS
    ttrpc_address: str = DEFAULT_ADDRESS + ".ttrpc"
    publish_binary: str = ""
    debug: bool = False
    sched_core: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    socket_dir: Path = SHIM_SOCKET_DIR

    # Cached: inspect asks for them once per bundle.
    @cached_property
    def task_root(self) -> Path:
        """ROOT: where work dirs live."""
        return self.root / TASK_PLUGIN_DIR

    @cached_property
    def task_state(self) -> Path:
        """STATE: where bundles live."""
        return self.state / TASK_PLUGIN_DIR

    def with_namespace(self, namespace: str) -> Settings:
        return replace(self, namespace=namespace)


@dataclass(frozen=True)
class ContainerdConfig:
    """The few things shimctl takes from containerd's config.toml."""

    root: str | None = None
    state: str | None = None
    address: str | None = None
    ttrpc_address: str | None = None
    sched_core: bool | None = None
    timeouts: dict[str, float] = field(default_factory=dict)


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration ("5s", "1m30s", "250ms") or a plain number of seconds.

    Negative, infinite and NaN values are refused: every duration shimctl takes is a wait or
    an age.
    """
    text = text.strip()
    bad = InvalidArgument(
        f"invalid duration {text!r}", hint="use a number of seconds or a Go duration like 5m"
    )
    number = text[1:] if text.startswith("+") else text
    if re.fullmatch(_NUMBER, number):
        total = float(number)
    else:
        pos, total = 0, 0.0
        for match in _DURATION_PART.finditer(number):
            if match.start() != pos:
                raise bad
            total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            pos = match.end()
        if pos == 0 or pos != len(number):
            raise bad
    if not math.isfinite(total):
        raise bad
    return total


def read_containerd_config(path: Path) -> ContainerdConfig:
    """Read containerd's config.toml; a missing file gives an empty config."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ContainerdConfig()
    except OSError as err:
        raise InvalidArgument(
            f"cannot read containerd config {path}: {err.strerror}",
            hint="pass --config with a readable file",
        ) from None
    try:
        import tomllib  # only when a config file exists

        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise InvalidArgument(
            f"containerd config {path} is not valid TOML: {err}",
            hint="fix the file or pass --config pointing at another one",
        ) from None
    return _config_from_doc(doc, path)


def _config_from_doc(doc: dict[str, Any], path: Path) -> ContainerdConfig:
    def text(value: Any, key: str) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise InvalidArgument(f"containerd config {path}: {key} must be a string")
        return value

    def table(value: Any, key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise InvalidArgument(f"containerd config {path}: [{key}] must be a table")
        return value

    grpc = table(doc.get("grpc"), "grpc")
    ttrpc = table(doc.get("ttrpc"), "ttrpc")
    plugins = table(doc.get("plugins"), "plugins")
    task_plugin = table(
        plugins.get(TASK_PLUGIN_DIR) or plugins.get("io.containerd.runtime.v2"),
        f'plugins."{TASK_PLUGIN_DIR}"',
    )
    timeouts: dict[str, float] = {}
    timeout_table = table(doc.get("timeouts"), "timeouts")
    for key, name in _TIMEOUT_KEYS.items():
        value = timeout_table.get(key)
        if value is None:
            continue
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise InvalidArgument(f"containerd config {path}: timeouts {key!r} must be a duration")
        try:
            timeouts[name] = parse_duration(str(value))
        except InvalidArgument as err:
            raise InvalidArgument(
                f"containerd config {path}: timeouts {key!r}: {err}",
                hint='use a Go duration like "5s" or "1m30s"',
            ) from None
    sched = task_plugin.get("sched_core")
    return ContainerdConfig(
        root=text(doc.get("root"), "root"),
        state=text(doc.get("state"), "state"),
        address=text(grpc.get("address"), "grpc.address"),
        ttrpc_address=text(ttrpc.get("address"), "ttrpc.address"),
        sched_core=bool(sched) if sched is not None else None,
        timeouts=timeouts,
    )


def default_publish_binary() -> str:
    """containerd's executable if on PATH, else shimctl's own (the shim calls it to publish)."""
    found = shutil.which("containerd")
    if found:
        return os.path.abspath(found)
    return os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else "containerd"


def build_settings(
    *,
    config: Path | None = None,
    root: str | None = None,
    state: str | None = None,
    namespace: str | None = None,
    address: str | None = None,
    ttrpc_address: str | None = None,
    publish_binary: str | None = None,
    debug: bool = False,
    timeout: float | None = None,
    existing_dirs: bool = False,
) -> Settings:
    """Merge explicit values (flags or env, already resolved by click) over config over defaults.

    With `existing_dirs` (every command that reads or writes under root and state), root and
    state must be absolute paths of existing directories: a typo in a cron line is an error,
    not a run that finds nothing, for ever."""
    # Here, not at the top: --help imports this module for its defaults and needs no parser.
    from shimctl.shim.address import strip_unix

    config_path = config or Path(DEFAULT_CONFIG)
    cfg = read_containerd_config(config_path)
    if existing_dirs:
        for flag, given, from_config, default in (
            ("--root", root, cfg.root, DEFAULT_ROOT),
            ("--state", state, cfg.state, DEFAULT_STATE),
        ):
            _require_dir(flag, given, from_config, default, config_path)
    final_address = strip_unix(address or cfg.address or DEFAULT_ADDRESS)
    final_ttrpc = strip_unix(ttrpc_address or cfg.ttrpc_address or final_address + ".ttrpc")
    timeouts = replace(Timeouts(), **cfg.timeouts)
    if timeout is not None:
        if not (math.isfinite(timeout) and timeout > 0):
            raise InvalidArgument(f"--timeout must be a positive number of seconds, got {timeout}")
        timeouts = replace(timeouts, load=timeout, cleanup=timeout)
    ns = namespace or DEFAULT_NAMESPACE
    return Settings(
        root=_abs_dir(root or cfg.root or DEFAULT_ROOT, "--root"),
        state=_abs_dir(state or cfg.state or DEFAULT_STATE, "--state"),
        namespace=ns,
        namespace_given=namespace is not None,
        address=final_address,
        ttrpc_address=final_ttrpc,
        publish_binary=publish_binary or default_publish_binary(),
        debug=debug,
        sched_core=bool(cfg.sched_core),
        timeouts=timeouts,
    )


def _require_dir(
    flag: str, given: str | None, from_config: str | None, default: str, config: Path
) -> None:
    """Refuse a root/state dir that is relative, missing, not a directory or not searchable,
    naming where the value came from and how to fix it."""
    name = flag[2:]
    if given:
        value, source = given, f"{flag} or SHIMCTL_{name.upper()}"
    elif from_config:
        value, source = from_config, f"{name} in {config}"
    else:
        value, source = default, "containerd's default"
    fix = f"pass {flag} (or set {name} in --config) naming containerd's {name} dir"
    if not os.path.isabs(value):
        raise InvalidArgument(
            f"{name} dir {value!r} (from {source}) is not an absolute path", hint=fix
        )
    parent = os.path.dirname(value.rstrip("/")) or "/"
    if not os.path.exists(value):
        if os.path.isdir(parent) and not os.access(parent, os.X_OK):
            raise FailedPrecondition(
                f"cannot look for the {name} dir {value}: permission denied on {parent}",
                hint="run shimctl as root",
            )
        raise NotFound(
            f"{name} dir {value} (from {source}) does not exist",
            hint=f"{fix}; on a node without containerd, install and start it first",
        )
    if not os.path.isdir(value):
        raise InvalidArgument(f"{name} dir {value} (from {source}) is not a directory", hint=fix)
    if not os.access(value, os.X_OK):
        # Nothing under it can be reached (containerd makes /run/containerd 0700), so naming
        # one namespace with -n would not help either.
        raise FailedPrecondition(
            f"cannot enter the {name} dir {value}: permission denied", hint="run shimctl as root"
        )


def _abs_dir(value: str, flag: str) -> Path:
    if not value or "\0" in value:
        raise InvalidArgument(f"{flag} must be a directory path, got {value!r}")
    return Path(os.path.abspath(value))
