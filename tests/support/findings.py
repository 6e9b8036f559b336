"""Reading the findings of a `--json` list, load or gc run: the one parser tests share."""

from __future__ import annotations

import json
import subprocess
from typing import Any

Finding = dict[str, Any]


def document(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The run's JSON document (stdout)."""
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def by_id(
    source: subprocess.CompletedProcess[str] | dict[str, Any], *, namespace: str | None = None
) -> dict[str, Finding]:
    """id -> finding, from a finished run or from its `result` object; `namespace`: only its."""
    result = (
        document(source)["result"] if isinstance(source, subprocess.CompletedProcess) else source
    )
    return {
        f["id"]: f for f in result["findings"] if namespace is None or f["namespace"] == namespace
    }


def by_key(proc: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], Finding]:
    """(namespace, id) -> finding of a finished run."""
    return {(f["namespace"], f["id"]): f for f in document(proc)["result"]["findings"]}
