"""The `--json` documents: one per run on stdout, the schema in docs/json-schema.md."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shimctl.errors import ShimctlError

SCHEMA_VERSION = 2


def to_jsonable(value: Any) -> Any:
    """Dataclasses as objects (fields in order), tuples as lists, enums as their values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if hasattr(value, "value") and hasattr(value, "name") and type(value).__module__ != "builtins":
        return value.value  # enums
    return value


def result_document(command: str, result: Any) -> str:
    doc = {"schema_version": SCHEMA_VERSION, "command": command, "result": to_jsonable(result)}
    return json.dumps(doc, indent=2) + "\n"


def error_document(err: ShimctlError) -> str:
    doc = {
        "schema_version": SCHEMA_VERSION,
        "error": {"kind": err.kind, "message": err.message, "exit_code": int(err.exit_code)},
    }
    return json.dumps(doc, indent=2) + "\n"
