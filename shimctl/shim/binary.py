"""The shim binary protocol: the `start` and `delete` verbs (shim-binary.md §3 and §5)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from shimctl.errors import DeadlineExceeded, NotFound, Unknown
from shimctl.shim.task import Exit, decode_delete_response


@dataclass(frozen=True)
class ShimBinary:
    """A resolved shim binary plus the flags every verb passes to it; its caller (ops) builds
    it from containerd's settings, so the protocol itself knows nothing of them."""

    path: str
    namespace: str
    id: str
    address: str  # containerd's gRPC address, without unix://; it goes into the socket hash
    publish_binary: str
    ttrpc_address: str
    debug: bool = False
    sched_core: bool = False

    def argv(self, verb: str, *, bundle: Path | None = None) -> list[str]:
        args = [
            self.path,
            "-namespace",
            self.namespace,
            "-address",
            self.address,
            "-publish-binary",
            self.publish_binary,
            "-id",
            self.id,
        ]
        if bundle is not None:
            args += ["-bundle", str(bundle)]
        if self.debug and verb == "start":
            args.append("-debug")
        args.append(verb)
        return args

    def env(self, *, sched_core: bool) -> dict[str, str]:
        env = dict(os.environ)
        env["GOMAXPROCS"] = "2"
        env["TTRPC_ADDRESS"] = self.ttrpc_address
        if sched_core:
            env["SCHED_CORE"] = "1"
        return env


def run_start(shim: ShimBinary, bundle: Path, *, options: bytes | None, timeout: float) -> str:
    """Run `<shim> ... start` in the bundle; return its trimmed stdout+stderr (the address or
    bootstrap JSON). The caller must already hold the bundle's log fifo open for reading."""
    try:
        proc = subprocess.run(
            shim.argv("start"),
            cwd=bundle,
            env=shim.env(sched_core=shim.sched_core),
            input=options if options else None,
            stdin=None if options else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(
            f"shim start did not finish within {timeout:g}s: {shim.path}",
            hint="raise --timeout, or check the shim with --debug",
        ) from None
    except OSError as err:
        raise NotFound(f"cannot run shim {shim.path}: {err.strerror}") from None
    output = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise Unknown(f"start failed: {output.strip()}: exit status {proc.returncode}")
    return output.strip()


def run_delete(shim: ShimBinary, bundle: Path, *, timeout: float) -> Exit:
    """Run `<shim> ... -bundle B delete` with the bundle as cwd (the runc shim ignores -bundle
    and derives the bundle from its cwd); parse the DeleteResponse it prints."""
    try:
        proc = subprocess.run(
            shim.argv("delete", bundle=bundle),
            cwd=bundle,
            env=shim.env(sched_core=False),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            process_group=0,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(f"shim delete did not finish within {timeout:g}s") from None
    except OSError as err:
        raise NotFound(f"cannot run shim {shim.path}: {err.strerror}") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode("utf-8", "replace").strip()
        raise Unknown(f"{stderr}: exit status {proc.returncode}")
    return decode_delete_response(proc.stdout)
