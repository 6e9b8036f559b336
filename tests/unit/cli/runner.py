"""Run `python -m shimctl` with exactly the arguments given (no node options added)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.helpers import Node

REPO = Path(__file__).resolve().parents[3]


def shimctl(
    node: Node,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    buffered: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`python -m shimctl *args` with the node's environment (plus `env`); `buffered`: with
    ordinary block-buffered stdout (PYTHONUNBUFFERED removed), as on a user's machine."""
    run_env = node.env() | (env or {})
    run_env["PYTHONPATH"] = str(REPO)  # this tree's shimctl, whatever the cwd
    if buffered:
        run_env.pop("PYTHONUNBUFFERED", None)
    return subprocess.run(
        [sys.executable, "-m", "shimctl", *args],
        env=run_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
