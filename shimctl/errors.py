"""Error classes mirroring containerd's errdefs, and the one table of exit codes.

Every failure shimctl reports is one of these classes; each names its `ExitCode`. The ttrpc
client maps gRPC status codes onto them (`from_grpc_code`). The README's and the man page's
exit-code tables are generated from `ExitCode` (tools/docgen.py).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Every status shimctl exits with; `meaning` is the line the docs' tables show."""

    OK = 0
    UNKNOWN = 1
    INVALID_ARGUMENT = 2
    NOT_FOUND = 3
    ALREADY_EXISTS = 4
    FAILED_PRECONDITION = 5
    UNAVAILABLE = 6
    DEADLINE_EXCEEDED = 7
    NOT_IMPLEMENTED = 8
    PROTOCOL = 9
    UNSAFE = 10
    ACTIONS_FAILED = 11
    GARBAGE_FOUND = 12
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
    BROKEN_PIPE = 141  # 128 + SIGPIPE

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


# Kept beside the enum, not inside it: an enum with a custom __new__ costs ~0.7 ms to create,
# on every run's start-up path.
_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.UNKNOWN: "unknown error (the message says what)",
    ExitCode.INVALID_ARGUMENT: "invalid argument or usage error (bad id, runtime name, spec, "
    "option, a relative --root/--state)",
    ExitCode.NOT_FOUND: "not found (no such bundle, sandbox, runtime binary, root or state dir)",
    ExitCode.ALREADY_EXISTS: "already exists (the id is taken)",
    ExitCode.FAILED_PRECONDITION: "failed precondition (e.g. the task still runs, a shim is "
    "alive but does not answer; a doctor check failed)",
    ExitCode.UNAVAILABLE: "unavailable (the shim does not accept connections)",
    ExitCode.DEADLINE_EXCEEDED: "deadline exceeded (a shim or the state lock did not answer "
    "in time)",
    ExitCode.NOT_IMPLEMENTED: "not implemented (a shim speaks a protocol or version shimctl "
    "does not know)",
    ExitCode.PROTOCOL: "protocol error (a shim sent bytes that are not valid ttrpc)",
    ExitCode.UNSAFE: "unsafe (a path would lead outside root/state, or a PID is not the shim "
    "meant)",
    ExitCode.ACTIONS_FAILED: "load/gc finished, but some actions failed",
    ExitCode.GARBAGE_FOUND: "gc/list `--exit-code`: garbage was found (cleaned or not) and "
    "nothing failed; for a CI step that fails the job which leaked shims",
    ExitCode.INTERRUPTED: "interrupted",
    ExitCode.BROKEN_PIPE: "the reader of stdout went away (`shimctl list | head`); nothing "
    "printed to stderr",
}


class ShimctlError(Exception):
    """Base class. `exit_code` is what the process exits with when this error ends a command."""

    exit_code = ExitCode.UNKNOWN
    kind = "unknown"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ShimctlError):
    exit_code = ExitCode.INVALID_ARGUMENT
    kind = "invalid-argument"


class NotFound(ShimctlError):
    exit_code = ExitCode.NOT_FOUND
    kind = "not-found"


class AlreadyExists(ShimctlError):
    exit_code = ExitCode.ALREADY_EXISTS
    kind = "already-exists"


class FailedPrecondition(ShimctlError):
    exit_code = ExitCode.FAILED_PRECONDITION
    kind = "failed-precondition"


class Unavailable(ShimctlError):
    exit_code = ExitCode.UNAVAILABLE
    kind = "unavailable"


class ShimClosed(Unavailable):
    """The connection ended (EOF, reset, broken pipe): ttrpc's ErrClosed."""

    kind = "closed"


class DeadlineExceeded(ShimctlError):
    exit_code = ExitCode.DEADLINE_EXCEEDED
    kind = "deadline-exceeded"


class NotImplementedByShim(ShimctlError):
    exit_code = ExitCode.NOT_IMPLEMENTED
    kind = "not-implemented"


class ProtocolError(ShimctlError):
    """The peer sent bytes that are not valid ttrpc or protobuf (a broken or hostile shim)."""

    exit_code = ExitCode.PROTOCOL
    kind = "protocol"


class Unsafe(ShimctlError):
    """A path would lead outside root/state, or a process is not the shim we mean."""

    exit_code = ExitCode.UNSAFE
    kind = "unsafe"


class Unknown(ShimctlError):
    exit_code = ExitCode.UNKNOWN
    kind = "unknown"


# gRPC status code -> error class, as containerd's errdefs.FromGRPC classifies them.
_GRPC_CLASSES: dict[int, type[ShimctlError]] = {
    3: InvalidArgument,
    4: DeadlineExceeded,
    5: NotFound,
    6: AlreadyExists,
    9: FailedPrecondition,
    12: NotImplementedByShim,
    14: Unavailable,
}

_CLASS_TEXT: dict[type[ShimctlError], str] = {
    InvalidArgument: "invalid argument",
    DeadlineExceeded: "context deadline exceeded",
    NotFound: "not found",
    AlreadyExists: "already exists",
    FailedPrecondition: "failed precondition",
    NotImplementedByShim: "not implemented",
    Unavailable: "unavailable",
}


def from_grpc_code(code: int, message: str) -> ShimctlError:
    """Build the error containerd would build from a ttrpc status (code, message)."""
    cls = _GRPC_CLASSES.get(code, Unknown)
    text = _CLASS_TEXT.get(cls)
    if text and message != text and not message.endswith(": " + text):
        message = f"{message}: {text}" if message else text
    err = cls(message)
    err.grpc_code = code  # type: ignore[attr-defined]
    return err
