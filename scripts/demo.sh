#!/usr/bin/env bash
# shimctl end to end on a private, temporary root/state with real shims:
# a running busybox task, a leaked shim (#6860), a dead shim, an orphan work dir and a stale
# hidden dir; `list`, `gc --dry-run`, `gc`, `load --dry-run`; then everything is cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" != 0 ]; then echo "make demo needs root (shims and runc do)" >&2; exit 1; fi

base=$(mktemp -d /tmp/shimctl-demo.XXXXXX)
export SHIMCTL_ROOT=$base/root SHIMCTL_STATE=$base/state SHIMCTL_ADDRESS=$base/containerd.sock
# containerd makes its root and state dirs when it starts; this private node has none yet.
mkdir -p -m 0700 "$SHIMCTL_ROOT"
mkdir -p -m 0711 "$SHIMCTL_STATE"
export SHIMCTL_CONFIG=$base/no-config.toml
shimctl() { "$PYTHON" -m shimctl "$@"; }
# Step headers in bold only on a terminal without NO_COLOR (https://no-color.org), as shimctl's
# own output does; plain text in a log or a pipe.
bold="" plain=""
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ] && [ "${TERM:-dumb}" != dumb ]; then
  bold=$'\033[1m' plain=$'\033[0m'
fi
step() { printf '\n%s$ shimctl %s%s\n' "$bold" "$*" "$plain"; shimctl "$@"; }

cleanup() {
  # Stop what the demo started, by PID, after checking each is a shim of this private address.
  "$PYTHON" - "$SHIMCTL_ADDRESS" <<'PY' || true
import sys
from shimctl.node import processes
for shim in processes.find_shims(sys.argv[1]):
    processes.terminate(shim.ref, grace=2.0)
PY
  shimctl gc --min-age 0 --quiet >/dev/null 2>&1 || true
  rm -rf "$base"
}
trap cleanup EXIT

echo "private state in $base"
spec=$base/sleep.json
"$PYTHON" -c 'import json,sys; from shimctl.node.spec import default_spec; json.dump(default_spec(["/bin/sleep","600"]), open(sys.argv[1],"w"))' "$spec"

step start web --spec "$spec"
# Give `web` a real busybox task through shimctl's own ttrpc client.
"$PYTHON" - "$SHIMCTL_STATE" "$base" <<'PY'
import os, shutil, sys
from pathlib import Path
from shimctl.shim.task import Mount, TaskClient, runc_options_any
state, base = Path(sys.argv[1]), sys.argv[2]
bundle = state / "io.containerd.runtime.v2.task/default/web"
# A busybox rootfs, bind-mounted onto the bundle's rootfs by the shim, as a snapshot would be.
bin_dir = Path(base) / "rootfs/bin"
bin_dir.mkdir(parents=True)
for mount_point in ("proc", "dev", "sys"):
    (Path(base) / "rootfs" / mount_point).mkdir()
shutil.copy("/bin/busybox", bin_dir / "busybox")
for applet in ("sh", "sleep"):
    os.symlink("busybox", bin_dir / applet)
address = (bundle / "address").read_text()
with TaskClient.connect(address, "default", timeout=10) as task:
    task.create(
        "web",
        str(bundle),
        rootfs=[Mount("bind", f"{base}/rootfs", options=("rbind", "ro"))],
        options=runc_options_any(root=f"{base}/runc"),
    )
    print(f"created task web, pid {task.start('web')}")
PY

step start leak1
shimctl start dead1 >/dev/null
dead_pid=$(shimctl --json list | "$PYTHON" -c 'import json,sys; print([f["shim_pid"] for f in json.load(sys.stdin)["result"]["findings"] if f["id"]=="dead1"][0])')
echo "killing dead1's shim (pid $dead_pid) to make a dead shim"
kill -9 "$dead_pid"
mkdir -p "$SHIMCTL_ROOT/io.containerd.runtime.v2.task/default/orphanwork"
mkdir -p "$SHIMCTL_STATE/io.containerd.runtime.v2.task/default/.gone1/rootfs"

step list
step gc --dry-run --min-age 0
step gc --min-age 0
step list
step gc --min-age 0
step load --dry-run

"$PYTHON" - "$SHIMCTL_STATE" <<'PY'
import sys
from shimctl.shim.task import TaskClient
from pathlib import Path
address = (Path(sys.argv[1]) / "io.containerd.runtime.v2.task/default/web/address").read_text()
with TaskClient.connect(address, "default", timeout=10) as task:
    task.kill("web", 9)
    print(f"killed task web: exit status {task.wait('web').exit_status}")
PY
step delete web
step list
