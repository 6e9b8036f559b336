#!/usr/bin/env bash
# Install what the field tests (tests/field: shimctl beside real Docker and real CRI) need.
# Idempotent and quiet on success:
#  - Debian's docker.io (dockerd 20.10 and its docker CLI, /usr/bin/docker) and tini (the
#    `docker run --init` binary, docker-init), only when missing. No daemon is started: the
#    tests run their own dockerd against a private containerd; Debian's postinst leaves
#    the service to policy-rc.d / systemd, and nothing here enables it.
#  - The CRI v1 api.proto is vendored (tests/support/cri_proto/); its Python stubs are
#    generated at test time with grpcio-tools (the dev extra), so nothing else is needed.
#  - promtool (tests/unit/test_deploy.py checks deploy/'s alert rules and gc's metrics file
#    with it), from Debian's prometheus package: fetched with `apt-get download` and only
#    /usr/bin/promtool unpacked into $SHIMCTL_PROMTOOL_DIR (default /var/cache/shimctl-promtool),
#    so no Prometheus server is installed or started. Skipped when promtool is on PATH.
# Env: SHIMCTL_PROMTOOL_DIR. Needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

promtool_dir="${SHIMCTL_PROMTOOL_DIR:-/var/cache/shimctl-promtool}"
need_promtool=0
have promtool || [[ -x $promtool_dir/promtool ]] || need_promtool=1

pkgs=()
[[ -x /usr/sbin/dockerd && -x /usr/bin/docker ]] || pkgs+=(docker.io)
[[ -x /usr/bin/tini || -x /usr/bin/docker-init ]] || pkgs+=(tini)
((${#pkgs[@]} + need_promtool)) || exit 0

sudo=()
if [[ $EUID -ne 0 ]]; then
	have sudo || { echo "install-field-deps: need root to install: ${pkgs[*]}" >&2; exit 1; }
	sudo=(sudo -n)
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
run_quiet() { # run a command; show its output only if it fails
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		echo "install-field-deps: failed: $*" >&2
		exit 1
	fi
}
apt_opts=(-q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
if ((${#pkgs[@]})); then
	run_quiet "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get "${apt_opts[@]}" install -y --no-install-recommends "${pkgs[@]}"
	[[ -x /usr/sbin/dockerd ]] || { echo "install-field-deps: dockerd still missing" >&2; exit 1; }
fi
if ((need_promtool)); then
	work="$(mktemp -d)"
	trap 'rm -f "$log"; rm -rf "$work"' EXIT
	chmod 755 "$work" # apt-get download drops privileges to _apt for the fetch
	(cd "$work" && run_quiet "${sudo[@]}" apt-get "${apt_opts[@]}" download prometheus)
	run_quiet "${sudo[@]}" dpkg-deb -x "$work"/prometheus_*.deb "$work/x"
	run_quiet "${sudo[@]}" install -D -m 0755 "$work/x/usr/bin/promtool" "$promtool_dir/promtool"
	"$promtool_dir/promtool" --version >/dev/null 2>&1 ||
		{ echo "install-field-deps: $promtool_dir/promtool does not run" >&2; exit 1; }
fi
