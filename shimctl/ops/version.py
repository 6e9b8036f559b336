"""`shimctl version`: shimctl, Python, and the containerd and shims found on this node.

Each program is asked for its version (`containerd --version`, `<shim> -v`) with a short
timeout; a missing or broken program is reported, never an error.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess

from shimctl import __version__
from shimctl.errors import ShimctlError
from shimctl.models.info import ComponentVersion, VersionInfo
from shimctl.node.bundle import SHIM_BINARY_PATH
from shimctl.node.runtimes import resolve_runtime_path
from shimctl.settings import DEFAULT_RUNTIME, Settings
from shimctl.steps import access

TIMEOUT = 5.0
_CONTAINERD_VERSION = re.compile(r"^containerd\s+\S+\s+(\S+)", re.MULTILINE)
_SHIM_VERSION = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)
# How many bundles' shim-binary-path to read at most (a node with thousands of tasks).
MAX_BUNDLES = 256


def run_version(argv: list[str], pattern: re.Pattern[str]) -> tuple[str | None, str | None]:
    """(version, error) of `argv`'s output."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"{argv[0]} {argv[1]} did not answer within {TIMEOUT:g}s"
    except OSError as err:
        return None, f"cannot run {argv[0]}: {err.strerror}"
    text = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    match = pattern.search(text)
    if match is None:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        return None, f"unrecognised version output (exit {proc.returncode}): {first[:200]}"
    return match.group(1), None


def containerd_version() -> ComponentVersion:
    path = shutil.which("containerd")
    if path is None:
        return ComponentVersion("containerd", None, None, "containerd is not on PATH")
    version, error = run_version([path, "--version"], _CONTAINERD_VERSION)
    return ComponentVersion("containerd", path, version, error)


def shim_version(name: str, path: str) -> ComponentVersion:
    version, error = run_version([path, "-v"], _SHIM_VERSION)
    return ComponentVersion(name, path, version, error)


def bundle_shim_binaries(settings: Settings) -> list[str]:
    """Distinct shim-binary-path values of the bundles in the state dir."""
    found: set[str] = set()
    seen = 0
    try:
        namespaces = sorted(os.scandir(settings.task_state), key=lambda e: e.name)
    except OSError:
        return []
    for ns in namespaces:
        if ns.name.startswith(".") or not ns.is_dir(follow_symlinks=False):
            continue
        try:
            bundles = sorted(os.scandir(ns.path), key=lambda e: e.name)
        except OSError:
            continue
        for entry in bundles:
            if seen >= MAX_BUNDLES:
                return sorted(found)
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            seen += 1
            try:
                text = access.locate(settings, ns.name, entry.name).read_text(SHIM_BINARY_PATH)
            except (OSError, ShimctlError):
                continue
            if text is not None and os.path.isabs(text):
                found.add(text)
    return sorted(found)


def collect(settings: Settings) -> VersionInfo:
    shims: list[ComponentVersion] = []
    try:
        default = resolve_runtime_path(DEFAULT_RUNTIME, containerd_binary=settings.publish_binary)
        shims.append(shim_version(DEFAULT_RUNTIME, default))
    except ShimctlError as err:
        default = None
        shims.append(ComponentVersion(DEFAULT_RUNTIME, None, None, str(err)))
    for path in bundle_shim_binaries(settings):
        if path != default:
            shims.append(
                shim_version(path, path)
                if os.path.exists(path)
                else ComponentVersion(path, path, None, "named by a bundle; does not exist")
            )
    return VersionInfo(
        shimctl=__version__,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        containerd=containerd_version(),
        shims=shims,
    )
