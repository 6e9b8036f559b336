"""promtool (Debian's prometheus package) for the tests of deploy/'s alert rules and of gc's
metrics file: found on PATH, else where scripts/install-field-deps.sh unpacks it. A test that
needs it skips without it, and fails with ``CI=true``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

#: Where scripts/install-field-deps.sh puts promtool when it is not on PATH.
CACHE = Path(os.environ.get("SHIMCTL_PROMTOOL_DIR", "/var/cache/shimctl-promtool")) / "promtool"


def find() -> str | None:
    on_path = shutil.which("promtool")
    if on_path:
        return on_path
    return str(CACHE) if os.access(CACHE, os.X_OK) else None


def require() -> str:
    """promtool's path; skips the calling test without it (fails it when ``CI=true``)."""
    found = find()
    if found is not None:
        return found
    msg = (
        f"promtool missing (not on PATH, not {CACHE}): Debian package prometheus, "
        "unpacked by scripts/install-field-deps.sh"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def run(*args: str, stdin: str | None = None, cwd: Path | None = None) -> str:
    """Run promtool; asserts it succeeded and returns its stdout and stderr together."""
    proc = subprocess.run(
        [require(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=cwd,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed ({proc.returncode}):\n{out}"
    return out
