"""Delete a container's runc state whose bundle is gone: `runc --root <root> delete --force
<id>`, as the runc shim's own delete does (cmd/containerd-shim-runc-v2/process/init.go,
delete: runc delete, forced once the container is not running).

runc itself proves the process it kills is the container's (it checks the init process's
start time recorded in state.json against /proc before signalling), removes the cgroup and
the state dir. shimctl checks that the state dir is gone afterwards.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shimctl.errors import DeadlineExceeded, FailedPrecondition, NotFound


def delete_runc_state(state_dir: Path, binary: str, timeout: float) -> str:
    """Run the delete for the state dir ``<root>/<ns>/<id>``; returns a note."""
    import subprocess

    path = shutil.which(binary) or (binary if os.path.isabs(binary) else None)
    if path is None:
        raise NotFound(
            f"{binary} is not on PATH: cannot delete runc state {state_dir}",
            hint="install runc (Debian: apt install runc) or put it on PATH",
        )
    argv = [path, "--root", str(state_dir.parent), "delete", "--force", state_dir.name]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise DeadlineExceeded(f"{' '.join(argv)} did not finish in {timeout:g}s") from None
    if os.path.lexists(state_dir):
        said = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        raise FailedPrecondition(f"runc state {state_dir} is still there after runc delete: {said}")
    return f"runc delete --force {state_dir.name} (root {state_dir.parent}): state removed"
