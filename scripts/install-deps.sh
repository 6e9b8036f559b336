#!/usr/bin/env bash
# Install what shimctl's build and tests need. Idempotent and quiet on success.
#  - Debian packages containerd, runc, busybox-static (and zsh, fish for the completion tests):
#    only when a binary is missing.
#  - containerd 1.7/2.1 binaries for the generations tests: scripts/fetch-containerd.sh.
#  - python -m compileall shimctl (bytecode, as a wheel install leaves it).
#  - pip install -e '.[dev]': skipped while build/.deps-stamp matches pyproject.toml
#    (and the interpreter) and shimctl is still installed editable from this checkout.
# Env: PYTHON (default python3).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" # runc is /usr/sbin/runc

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_quiet() { # run a command; show its output only if it fails
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		echo "install-deps: failed: $*" >&2
		exit 1
	fi
}

have() { command -v "$1" >/dev/null 2>&1; }

busybox_static() { # /bin/busybox exists and has no ELF program interpreter
	"$PYTHON" - <<'PY'
import struct, sys
try:
    with open("/bin/busybox", "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            sys.exit(1)
        e = "<" if ident[5] == 1 else ">"
        hdr = f.read(48)
        if ident[4] == 2:
            phoff = struct.unpack_from(e + "Q", hdr, 16)[0]
            phentsize, phnum = struct.unpack_from(e + "HH", hdr, 38)
        else:
            phoff = struct.unpack_from(e + "I", hdr, 12)[0]
            phentsize, phnum = struct.unpack_from(e + "HH", hdr, 26)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            if struct.unpack(e + "I", f.read(4))[0] == 3:  # PT_INTERP
                sys.exit(1)
except OSError:
    sys.exit(1)
PY
}

# --- Debian packages --------------------------------------------------------------------------
pkgs=()
{ have containerd && have containerd-shim-runc-v2; } || pkgs+=(containerd)
have runc || pkgs+=(runc)
busybox_static || pkgs+=(busybox-static)
# The shells the committed completion scripts are tested in.
have zsh || pkgs+=(zsh)
have fish || pkgs+=(fish)

if ((${#pkgs[@]})); then
	sudo=()
	if [[ $EUID -ne 0 ]]; then
		have sudo || { echo "install-deps: need root to install: ${pkgs[*]}" >&2; exit 1; }
		sudo=(sudo -n)
	fi
	apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
	run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
	run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get "${apt_opts[@]}" install -y --no-install-recommends "${pkgs[@]}"
	for b in containerd containerd-shim-runc-v2 runc; do
		have "$b" || { echo "install-deps: $b still missing after apt-get install" >&2; exit 1; }
	done
	busybox_static || { echo "install-deps: /bin/busybox is not static" >&2; exit 1; }
fi

# --- containerd 1.7 and 2.1 (trixie's, sid's) for the generations tests, cached outside ----
# the clone (scripts/fetch-containerd.sh); silent when cached. Failing is fatal only in CI.
fetch=(bash scripts/fetch-containerd.sh -q)
if [[ $EUID -ne 0 ]] && have sudo; then fetch=(sudo -n "${fetch[@]}"); fi
if ! "${fetch[@]}"; then
	[[ ${CI:-} == true ]] && { echo "install-deps: fetch-containerd.sh failed" >&2; exit 1; }
	echo "install-deps: warning: containerd generations not fetched; their tests skip" >&2
fi

# --- Python package and dev tools -------------------------------------------------------------
stamp_dir=build
stamp="$stamp_dir/.deps-stamp"
key="$(
	{
		sha256sum pyproject.toml
		"$PYTHON" -c 'import sys; print(sys.executable, sys.version)'
		pwd -P
	} | sha256sum | cut -d' ' -f1
)"

installed_ok() { # shimctl installed editable from this checkout, dev tools importable
	"$PYTHON" -P - "$(pwd -P)" <<'PY' # -P: not the in-tree egg-info
import importlib.metadata as md, importlib.util, json, os, sys
try:
    d = md.distribution("shimctl")
    url = json.loads(d.read_text("direct_url.json") or "{}")
except (md.PackageNotFoundError, ValueError):
    sys.exit(1)
if not url.get("dir_info", {}).get("editable"):
    sys.exit(1)
if os.path.realpath(url.get("url", "").removeprefix("file://")) != sys.argv[1]:
    sys.exit(1)
for mod in ("pytest", "xdist", "hypothesis", "ruff", "mypy", "psutil", "click", "grpc_tools"):
    if importlib.util.find_spec(mod) is None:
        sys.exit(1)
PY
}

# Bytecode for shimctl itself, as a wheel install would leave: an editable install under
# PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every run (~20 ms a run).
"$PYTHON" -m compileall -q shimctl >/dev/null

if [[ -f $stamp && "$(cat "$stamp")" == "$key" ]] && installed_ok; then
	exit 0
fi
run_quiet "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore \
	-e '.[dev]'
mkdir -p "$stamp_dir"
printf '%s\n' "$key" >"$stamp"
