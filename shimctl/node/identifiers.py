"""containerd's identifier rule for task ids and namespaces (identifiers/validate.go)."""

from __future__ import annotations

import re

from shimctl.errors import InvalidArgument

MAX_LENGTH = 76
_PATTERN = re.compile(r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*", re.ASCII)
PATTERN_TEXT = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


def go_quote(value: str) -> str:
    """Go's strconv.Quote (`%q`), so messages read as containerd's do and control characters
    never reach the terminal raw. Surrogate escapes (undecodable bytes) come out as \\xHH."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape'd byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def validate(value: str) -> None:
    """Raise InvalidArgument unless `value` is a valid containerd identifier."""
    if not value:
        raise InvalidArgument("identifier must not be empty: invalid argument")
    if _byte_length(value) > MAX_LENGTH:
        raise InvalidArgument(
            f"identifier {go_quote(value)} greater than maximum length ({MAX_LENGTH} characters)"
            ": invalid argument"
        )
    # fullmatch, not `$`: Python's `$` would accept a trailing newline.
    if not _PATTERN.fullmatch(value):
        raise InvalidArgument(
            f"identifier {go_quote(value)} must match {PATTERN_TEXT}: invalid argument"
        )


def _byte_length(value: str) -> int:
    """Go's len(): bytes of the UTF-8 string (argv bytes come back as surrogate escapes)."""
    try:
        return len(value.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return len(value.encode("utf-8", "surrogatepass"))


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
            f"invalid task id {go_quote(value)}: {err}",
            hint="ids are letters and digits joined by . _ -",
        ) from None


def validate_namespace(value: str) -> None:
    try:
        validate(value)
    except InvalidArgument as err:
        raise InvalidArgument(f"namespace validation: {err}") from None
