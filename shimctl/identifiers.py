"""containerd's identifier rule for task ids and namespaces (identifiers/validate.go)."""

from __future__ import annotations

import re

from shimctl.errors import InvalidArgument

MAX_LENGTH = 76
_PATTERN = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", re.ASCII)
PATTERN_TEXT = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


def validate(value: str) -> None:
    """Raise InvalidArgument unless `value` is a valid containerd identifier."""
    if not value:
        raise InvalidArgument("identifier must not be empty: invalid argument")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_LENGTH:
        raise InvalidArgument(
            f"identifier {value!r} greater than maximum length ({MAX_LENGTH} characters)"
            ": invalid argument"
        )
    # fullmatch, not `$`: Python's `$` would accept a trailing newline.
    if not _PATTERN.fullmatch(value):
        raise InvalidArgument(f"identifier {value!r} must match {PATTERN_TEXT}: invalid argument")


def is_valid(value: str) -> bool:
    try:
        validate(value)
    except InvalidArgument:
        return False
    return True


def validate_task_id(value: str) -> None:
    try:
        validate(value)
    except InvalidArgument as err:
        raise InvalidArgument(
            f"invalid task id {value!r}: {err}", hint="ids are letters and digits joined by . _ -"
        ) from None


def validate_namespace(value: str) -> None:
    try:
        validate(value)
    except InvalidArgument as err:
        raise InvalidArgument(f"namespace validation: {err}") from None
