"""Runtime name -> shim binary path, in the manager's resolution order (shim-binary.md §1-2)."""

from __future__ import annotations

import os
import stat

from shimctl.errors import InvalidArgument, NotFound, ShimctlError


def binary_name(runtime_name: str) -> str | None:
    """`io.containerd.runc.v2` -> `containerd-shim-runc-v2`; None if the name is invalid."""
    parts = runtime_name.split(".")
    if len(parts) < 2 or not parts[0]:
        return None
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


def _invalid_name(runtime_name: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid runtime name {runtime_name!r}, correct runtime name should be either format like "
        "`io.containerd.runc.v1` or a full path to the binary",
        hint="use a name like io.containerd.runc.v2 or an absolute path",
    )


def resolve_runtime_path(runtime_name: str, *, containerd_binary: str, cwd: str = "/") -> str:
    """Resolve as containerd's resolveRuntimePath does (reference behaviour: a relative path
    with a slash is rejected). `containerd_binary` is the publish binary: its directory is the
    last place searched, as containerd searches beside its own executable."""
    if not runtime_name:
        raise InvalidArgument("no runtime name", hint="pass --runtime")
    if os.path.isabs(runtime_name):
        try:
            os.stat(runtime_name)
        except OSError as err:
            raise NotFound(
                f"invalid custom binary path {runtime_name}: {err.strerror}",
                hint="install the shim there or pass another --runtime",
            ) from None
        return runtime_name
    if "/" in runtime_name:
        raise _invalid_name(runtime_name)
    name = binary_name(runtime_name)
    if name is None:
        raise _invalid_name(runtime_name)
    beside_cwd = os.path.join(cwd, os.path.dirname(runtime_name) or ".", name)
    if os.path.exists(beside_cwd):
        return os.path.abspath(beside_cwd)
    found = _look_path(name)
    if found is not None:
        return os.path.abspath(found)
    # Only a binary with a directory part has a "beside": a bare name would search our cwd.
    containerd_dir = os.path.dirname(containerd_binary)
    if containerd_dir:
        beside = os.path.join(containerd_dir, name)
        if os.path.exists(beside):
            return os.path.abspath(beside)
    raise NotFound(
        f'runtime "{runtime_name}" binary not installed "{name}": file does not exist',
        hint=f"install {name} on PATH or pass --runtime /abs/path/to/{name}",
    )


def _look_path(name: str) -> str | None:
    # Go's exec.LookPath: first non-directory with any execute bit; an empty element means
    # the cwd, but an empty or unset PATH has no elements at all (filepath.SplitList("")).
    path = os.environ.get("PATH", "")
    for entry in path.split(":") if path else []:
        candidate = os.path.join(entry or ".", name)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    return None


def check_executable(path: str) -> None:
    """A resolved path that exists but cannot run gives a clear error before anything starts."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise NotFound(f"shim binary {path}: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"shim binary {path} is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"shim binary {path} is not a regular file")
    if not st.st_mode & 0o111 or not os.access(path, os.X_OK):
        raise InvalidArgument(f"shim binary {path} is not executable", hint=f"chmod +x {path}")


def recorded_binary_problem(path: str) -> str | None:
    """Why a bundle's shim-binary-path cannot be run, as the shim's `delete` verb would find
    it (run with the bundle as cwd, so it must be absolute); None if it can run."""
    if not os.path.isabs(path):
        return f"shim-binary-path {path!r} is not absolute"
    try:
        check_executable(path)
    except ShimctlError as err:
        return f"shim-binary-path: {err}"
    return None
