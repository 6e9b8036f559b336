"""containerd's identifier rule (layout.md §3): shimctl.node.identifiers."""

from __future__ import annotations

import pytest

from shimctl.errors import ExitCode, InvalidArgument
from shimctl.node import identifiers

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"

VALID = [
    "a",
    "Z",
    "0",
    "c1",
    "MixedCase09",
    "a.b",
    "a_b",
    "a-b",
    "a.b_c-d",
    "1-2.3_4",
    "k8s.io",
    "x" * 76,
    "a-" * 37 + "bc",  # exactly 76 bytes
]

INVALID_PATTERN = [
    "-a",
    "a-",
    ".a",
    "a.",
    "_",
    "a..b",
    "a.-b",
    "a__b",
    "a b",
    "a/b",
    "../evil",
    ".",
    "..",
    "a\n",  # Python's `$` would accept this one
    "\na",
    "a\nb",
    "a\x00",
    "a:b",
    "a+b",
    "é",  # only ASCII letters
    "\uff41",  # fullwidth a: \w in Python, not in the rule
    "a٣",  # Arabic-Indic digit: \d in Python, not in the rule
]


@pytest.mark.parametrize("value", VALID)
def test_valid_identifiers(value: str) -> None:
    identifiers.validate(value)
    assert identifiers.is_valid(value)


@pytest.mark.parametrize("value", INVALID_PATTERN)
def test_invalid_identifiers_fail_the_pattern(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate(value)
    assert str(info.value) == (
        f"identifier {identifiers.go_quote(value)} must match {PATTERN}: invalid argument"
    )
    assert not identifiers.is_valid(value)


def test_trailing_newline_message_is_go_quoted() -> None:
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate("ok\n")
    assert str(info.value) == f'identifier "ok\\n" must match {PATTERN}: invalid argument'
    assert "\n" not in str(info.value)


def test_empty() -> None:
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate("")
    assert str(info.value) == "identifier must not be empty: invalid argument"
    assert info.value.exit_code == ExitCode.INVALID_ARGUMENT


def test_length_limit_is_76_bytes() -> None:
    identifiers.validate("a" * 76)
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate("a" * 77)
    assert str(info.value) == (
        f'identifier "{"a" * 77}" greater than maximum length (76 characters): invalid argument'
    )


@pytest.mark.parametrize(
    ("value", "too_long"),
    [
        ("é" * 38, False),  # 76 bytes: length passes, the pattern fails
        ("é" * 39, True),  # 39 characters, 78 bytes: the length rule fires first
        ("a" * 74 + "€", True),  # 75 characters, 77 bytes
        ("a" * 73 + "€", False),  # 76 bytes
    ],
)
def test_length_is_counted_in_utf8_bytes(value: str, too_long: bool) -> None:
    assert len(value) <= 76
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate(value)
    assert ("greater than maximum length" in str(info.value)) is too_long
    assert ("must match" in str(info.value)) is not too_long


def test_length_is_checked_before_the_pattern() -> None:
    # Rule order: empty, then length, then pattern.
    with pytest.raises(InvalidArgument, match="greater than maximum length"):
        identifiers.validate("-" * 80)


def test_undecodable_argv_bytes_count_as_one_byte_each() -> None:
    # argv bytes that are not UTF-8 reach Python as surrogate escapes.
    raw = b"\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate("a" * 75 + raw)  # 76 bytes in Go
    assert "must match" in str(info.value)
    assert '\\xff"' in str(info.value)
    with pytest.raises(InvalidArgument, match="greater than maximum length"):
        identifiers.validate("a" * 76 + raw)


def test_lone_surrogate_does_not_crash() -> None:
    with pytest.raises(InvalidArgument, match="must match"):
        identifiers.validate("a\ud800")


def test_task_id_and_namespace_wrapping() -> None:
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate_task_id("a..b")
    assert str(info.value) == (
        f'invalid task id "a..b": identifier "a..b" must match {PATTERN}: invalid argument'
    )
    assert info.value.hint
    with pytest.raises(InvalidArgument) as info:
        identifiers.validate_namespace("")
    assert str(info.value) == "namespace validation: identifier must not be empty: invalid argument"
    identifiers.validate_task_id("c1")
    identifiers.validate_namespace("k8s.io")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("abc", '"abc"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("a\tb\r\n", '"a\\tb\\r\\n"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("é€", '"é€"'),
        ("\u00a0", '"\\u00a0"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(value: str, quoted: str) -> None:
    assert identifiers.go_quote(value) == quoted
