#!/usr/bin/env bash
# Install what a make target needs. Idempotent and quiet on success.
#
# Usage: install-deps.sh python|demo|test
#   python  the project's virtual environment with the dev tools (requirements/dev.lock): no
#           root, no apt (make check, lint, coverage)
#   demo    Debian's containerd, runc, busybox-static when a binary is missing; the environment
#           with the runtime dependencies only (requirements/run.lock)
#   test    demo's packages and zsh, fish (the completion tests); containerd 1.7 and 2.1 for the
#           generations tests (scripts/fetch-containerd.sh, cached outside the clone); the
#           environment with the dev tools
#
# The environment is $VENV (default .venv in the checkout), made with $BASE_PYTHON -m venv;
# when that interpreter has no venv module or ensurepip (Debian's python3 without
# python3-venv), python3-venv is installed with apt. Nothing is installed into the system
# interpreter. shimctl itself is installed editable (no deps, no build isolation: the build
# backend is in the lock), and its bytecode compiled as a wheel install leaves it.
# A stamp in $VENV skips pip while the lock and the interpreter are unchanged.
#
# Env: VENV (default .venv), BASE_PYTHON (default python3), PYTHON (default $VENV/bin/python:
# another interpreter is used as it is, and the lock is installed into it; it must be one pip
# may install into, i.e. not an "externally managed" one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-}"
case "$mode" in
python | demo | test) ;;
*)
	echo "usage: install-deps.sh python|demo|test" >&2
	exit 2
	;;
esac
VENV="${VENV:-.venv}"
BASE_PYTHON="${BASE_PYTHON:-python3}"
PYTHON="${PYTHON:-$VENV/bin/python}"
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

apt_updated=0
apt_install() { # Debian packages, as root (or through sudo -n)
	local sudo=()
	if [[ $EUID -ne 0 ]]; then
		have sudo || {
			echo "install-deps: need root to install: $*" >&2
			exit 1
		}
		sudo=(sudo -n)
	fi
	local apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
	if ((!apt_updated)); then
		run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
		apt_updated=1
	fi
	echo "install-deps: apt-get install $*" >&2
	run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get "${apt_opts[@]}" install -y --no-install-recommends "$@"
}

busybox_static() { # /bin/busybox exists and has no ELF program interpreter
	"$BASE_PYTHON" - <<'PY'
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
if [[ $mode != python ]]; then
	pkgs=()
	{ have containerd && have containerd-shim-runc-v2; } || pkgs+=(containerd)
	have runc || pkgs+=(runc)
	busybox_static || pkgs+=(busybox-static)
	if [[ $mode == test ]]; then
		# The shells the committed completion scripts are tested in.
		have zsh || pkgs+=(zsh)
		have fish || pkgs+=(fish)
	fi
	if ((${#pkgs[@]})); then
		apt_install "${pkgs[@]}"
		for b in containerd containerd-shim-runc-v2 runc; do
			have "$b" || {
				echo "install-deps: $b still missing after apt-get install" >&2
				exit 1
			}
		done
		busybox_static || {
			echo "install-deps: /bin/busybox is not static" >&2
			exit 1
		}
	fi
fi

# --- Docker (Debian's docker.io, tini) for the field tests beside real clients -------------
# (scripts/install-field-deps.sh; silent when installed). Fatal only in CI, where the field
# tests would fail anyway.
if [[ $mode == test ]]; then
	if ! bash scripts/install-field-deps.sh; then
		[[ ${CI:-} == true ]] && { echo "install-deps: install-field-deps.sh failed" >&2; exit 1; }
		echo "install-deps: warning: docker.io or promtool not installed; their tests skip" >&2
	fi
fi

# --- containerd 1.7 and 2.1 (trixie's, sid's) for the generations tests, cached outside ----
# the clone; silent when cached. One suite at a time, so that a failure names its generation.
# Failing is fatal only in CI (the generations tests skip, and fail with CI=true).
if [[ $mode == test ]]; then
	fetch=(bash scripts/fetch-containerd.sh -q)
	if [[ $EUID -ne 0 ]] && have sudo; then fetch=(sudo -n "${fetch[@]}"); fi
	failed=()
	read -r -a suites <<<"${SHIMCTL_CONTAINERD_SUITES:-trixie sid}"
	for suite in "${suites[@]}"; do
		case "$suite" in
		trixie) generation="containerd 1.7 (Debian trixie)" ;;
		sid) generation="containerd 2.1 (Debian sid)" ;;
		*) generation="containerd of Debian $suite" ;;
		esac
		"${fetch[@]}" "$suite" || failed+=("$generation")
	done
	for generation in "${failed[@]}"; do
		if [[ ${CI:-} == true ]]; then
			echo "install-deps: error: $generation could not be fetched" \
				"(scripts/fetch-containerd.sh $suite says why above)" >&2
		else
			echo "install-deps: warning: $generation could not be fetched; its tests skip" >&2
		fi
	done
	if ((${#failed[@]})) && [[ ${CI:-} == true ]]; then exit 1; fi
fi

# --- the virtual environment ------------------------------------------------------------------
venv_python="$VENV/bin/python"
if [[ $PYTHON == "$venv_python" ]]; then
	if ! "$venv_python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
		# Debian splits venv and ensurepip out of python3 (python3-venv, for the default python3).
		if ! "$BASE_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
			if [[ -x /usr/bin/apt-get && $(command -v "$BASE_PYTHON") == /usr/bin/* ]]; then
				apt_install python3-venv
			else
				echo "install-deps: $BASE_PYTHON has no venv module or ensurepip; install them" \
					"(Debian: apt-get install python3-venv) or set BASE_PYTHON" >&2
				exit 1
			fi
		fi
		echo "install-deps: making the virtual environment $VENV ($("$BASE_PYTHON" -V))" >&2
		run_quiet "$BASE_PYTHON" -m venv --clear "$VENV"
	fi
	stamp="$VENV/.shimctl-deps"
else
	if "$PYTHON" - <<'PY'; then
import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)
PY
		echo "install-deps: $PYTHON is externally managed (PEP 668): leave PYTHON unset to use" \
			"the project's own $VENV, or point it at a virtual environment" >&2
		exit 1
	fi
	stamp="$("$PYTHON" -c 'import sys; print(sys.prefix)')/.shimctl-deps-$(pwd -P | sha256sum | cut -c1-12)"
fi

lock=requirements/dev.lock
[[ $mode == demo ]] && lock=requirements/run.lock
key_of() { # the stamp line for one lock file
	{
		sha256sum "$1" pyproject.toml
		"$PYTHON" -c 'import sys; print(sys.executable, sys.version)'
		pwd -P
	} | sha256sum | cut -d' ' -f1
}

installed_ok() { # shimctl installed editable from this checkout
	"$PYTHON" -P - "$(pwd -P)" <<'PY' # -P: not the in-tree egg-info
import importlib.metadata as md, json, os, sys
try:
    d = md.distribution("shimctl")
    url = json.loads(d.read_text("direct_url.json") or "{}")
except (md.PackageNotFoundError, ValueError):
    sys.exit(1)
if not url.get("dir_info", {}).get("editable"):
    sys.exit(1)
if os.path.realpath(url.get("url", "").removeprefix("file://")) != sys.argv[1]:
    sys.exit(1)
PY
}

# Bytecode for shimctl itself, as a wheel install would leave: an editable install under
# PYTHONDONTWRITEBYTECODE would otherwise recompile every module on every run (~20 ms a run).
"$PYTHON" -m compileall -q shimctl >/dev/null

# dev.lock holds every pin of run.lock at the same version: either stamp satisfies demo.
if [[ -f $stamp ]] && installed_ok; then
	if grep -qxF "$(key_of "$lock")" "$stamp" ||
		{ [[ $mode == demo ]] && grep -qxF "$(key_of requirements/dev.lock)" "$stamp"; }; then
		exit 0
	fi
fi
pip=("$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore)
echo "install-deps: pip install -r $lock" >&2
run_quiet "${pip[@]}" --require-hashes -r "$lock"
run_quiet "${pip[@]}" --no-deps --no-build-isolation -e .
if ! "$PYTHON" -m pip check >"$log" 2>&1; then
	cat "$log" >&2
	echo "install-deps: $lock does not satisfy pyproject.toml: run make lock, commit the result" >&2
	exit 1
fi
key_of "$lock" >"$stamp"
