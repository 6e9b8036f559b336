"""Error classes mirroring containerd's errdefs, each with the exit code the CLI returns.

Every failure shimctl reports is one of these; the CLI maps them to exit codes in one place
(`exit_code`), and the ttrpc client maps gRPC status codes onto them (`from_grpc_code`).
"""

from __future__ import annotations


class ShimctlError(Exception):
    """Base class. `exit_code` is what the process exits with when this error ends a command."""

    exit_code = 1
    kind = "unknown"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ShimctlError):
    exit_code = 2
    kind = "invalid-argument"


class NotFound(ShimctlError):
    exit_code = 3
    kind = "not-found"


class AlreadyExists(ShimctlError):
    exit_code = 4
    kind = "already-exists"


class FailedPrecondition(ShimctlError):
    exit_code = 5
    kind = "failed-precondition"


class Unavailable(ShimctlError):
    exit_code = 6
    kind = "unavailable"


class ShimClosed(Unavailable):
    """The connection ended (EOF, reset, broken pipe): ttrpc's ErrClosed."""

    kind = "closed"


class DeadlineExceeded(ShimctlError):
    exit_code = 7
    kind = "deadline-exceeded"


class NotImplementedByShim(ShimctlError):
    exit_code = 8
    kind = "not-implemented"


class ProtocolError(ShimctlError):
    """The peer sent bytes that are not valid ttrpc or protobuf (a broken or hostile shim)."""

    exit_code = 9
    kind = "protocol"


class Unsafe(ShimctlError):
    """A path would lead outside root/state, or a process is not the shim we mean."""

    exit_code = 10
    kind = "unsafe"


class Unknown(ShimctlError):
    exit_code = 1
    kind = "unknown"


# Exit code of load/gc when some actions failed while the run itself completed.
EXIT_ACTIONS_FAILED = 11

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
