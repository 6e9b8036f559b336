#!/usr/bin/env bash
# make install / make uninstall: shimctl on a node, with Debian's own python3.
#
#   $SHIMCTL_HOME (/opt/shimctl)       a virtual environment with the runtime dependencies
#                                      (requirements/run.lock, hashes checked) and shimctl
#   $PREFIX/bin/shimctl                a link to it (/usr/local/bin: the path deploy/ uses)
#   $UNITDIR/shimctl-gc.{service,timer}  deploy/systemd's units, not enabled
#   $PREFIX/share/...                  bash, zsh and fish completions; the man page
#
# Every file put outside $SHIMCTL_HOME is listed in $SHIMCTL_HOME/installed-files, which
# uninstall removes (a file that is no longer ours is left alone). Installing again replaces
# the environment (the old one is kept until the new one works).
#
# Usage: install.sh install|uninstall
# Env: PREFIX (/usr/local), SHIMCTL_HOME (/opt/shimctl), UNITDIR ($PREFIX/lib/systemd/system),
#      BASE_PYTHON (/usr/bin/python3 where it exists, else python3). Needs root for the defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX="${PREFIX:-/usr/local}"
SHIMCTL_HOME="${SHIMCTL_HOME:-/opt/shimctl}"
UNITDIR="${UNITDIR:-$PREFIX/lib/systemd/system}"
if [[ -z ${BASE_PYTHON:-} ]]; then
	BASE_PYTHON=python3
	[[ -x /usr/bin/python3 ]] && BASE_PYTHON=/usr/bin/python3
fi
MARKER=".shimctl-install"
MANIFEST="$SHIMCTL_HOME/installed-files"

say() { echo "install: $*"; }
die() {
	echo "install: error: $*" >&2
	exit 1
}
for dir in "$PREFIX" "$SHIMCTL_HOME" "$UNITDIR"; do
	[[ $dir == /* ]] || die "$dir must be an absolute path"
done
systemd_running() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

# A file of ours: installed with mode $1 from $2 to $3, recorded in the manifest.
put() {
	install -D -m "$1" "$2" "$3"
	echo "$3" >>"$MANIFEST.new"
}

do_install() {
	if [[ -e $SHIMCTL_HOME && ! -f $SHIMCTL_HOME/$MARKER ]]; then
		die "$SHIMCTL_HOME exists and was not made by make install: move it away first"
	fi
	local link="$PREFIX/bin/shimctl"
	if [[ -e $link || -L $link ]] && [[ "$(readlink "$link")" != "$SHIMCTL_HOME/bin/shimctl" ]]; then
		die "$link exists and is not make install's link: remove it first"
	fi
	if ! "$BASE_PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
		if [[ -x /usr/bin/apt-get && $(command -v "$BASE_PYTHON") == /usr/bin/* ]]; then
			say "apt-get install python3-venv ($BASE_PYTHON has no venv module or ensurepip)"
			DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 update >/dev/null
			DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 install -y \
				--no-install-recommends python3-venv >/dev/null
		else
			die "$BASE_PYTHON has no venv module or ensurepip (Debian: apt-get install python3-venv)"
		fi
	fi
	# The old environment stays until the new one works (a venv cannot be moved: it is made
	# where it will live).
	local old=""
	if [[ -d $SHIMCTL_HOME ]]; then
		old="$SHIMCTL_HOME.old.$$"
		mv "$SHIMCTL_HOME" "$old"
	fi
	restore() {
		rm -rf "$SHIMCTL_HOME"
		[[ -n $old ]] && mv "$old" "$SHIMCTL_HOME"
		die "installing into $SHIMCTL_HOME failed; nothing changed"
	}
	trap restore ERR
	say "virtual environment $SHIMCTL_HOME ($("$BASE_PYTHON" -V))"
	mkdir -p "$(dirname "$SHIMCTL_HOME")"
	"$BASE_PYTHON" -m venv "$SHIMCTL_HOME"
	touch "$SHIMCTL_HOME/$MARKER"
	local pip=("$SHIMCTL_HOME/bin/python" -m pip install -q --disable-pip-version-check
		--root-user-action=ignore --no-cache-dir)
	"${pip[@]}" --require-hashes -r requirements/run.lock
	# A wheel of this checkout, built by the locked backend: no unpinned download.
	"${pip[@]}" --no-deps --no-build-isolation .
	"$SHIMCTL_HOME/bin/shimctl" --version >/dev/null
	trap - ERR
	[[ -n $old ]] && rm -rf "$old"

	: >"$MANIFEST.new"
	mkdir -p "$PREFIX/bin"
	ln -sfn "$SHIMCTL_HOME/bin/shimctl" "$link"
	echo "$link" >>"$MANIFEST.new"
	# The units name /usr/local/bin/shimctl; another PREFIX gets its own path in them.
	local unit tmp
	tmp="$(mktemp -d)"
	for unit in shimctl-gc.service shimctl-gc.timer; do
		sed "s|/usr/local/bin/shimctl|$link|g" "deploy/systemd/$unit" >"$tmp/$unit"
		put 644 "$tmp/$unit" "$UNITDIR/$unit"
	done
	rm -rf "$tmp"
	put 644 completions/shimctl.bash "$PREFIX/share/bash-completion/completions/shimctl"
	put 644 completions/_shimctl "$PREFIX/share/zsh/site-functions/_shimctl"
	put 644 completions/shimctl.fish "$PREFIX/share/fish/vendor_completions.d/shimctl.fish"
	put 644 docs/shimctl.1 "$PREFIX/share/man/man1/shimctl.1"
	mv "$MANIFEST.new" "$MANIFEST"
	if systemd_running; then systemctl daemon-reload; fi
	say "installed $("$link" --version) as $link"
	say "gc every 15 minutes: systemctl enable --now shimctl-gc.timer"
}

do_uninstall() {
	if [[ ! -f $SHIMCTL_HOME/$MARKER ]]; then
		say "nothing to remove: $SHIMCTL_HOME was not made by make install"
		return 0
	fi
	if systemd_running && grep -qx "$UNITDIR/shimctl-gc.timer" "$MANIFEST" 2>/dev/null; then
		systemctl disable --now shimctl-gc.timer >/dev/null 2>&1 || true
	fi
	local f
	while IFS= read -r f; do
		if [[ -L $f ]]; then
			[[ "$(readlink "$f")" == "$SHIMCTL_HOME/"* ]] && rm -f "$f"
		elif [[ -f $f ]]; then
			rm -f "$f"
		fi
	done <"$MANIFEST"
	rm -rf "$SHIMCTL_HOME"
	if systemd_running; then systemctl daemon-reload; fi
	say "removed $SHIMCTL_HOME and the files it listed"
}

case "${1:-}" in
install) do_install ;;
uninstall) do_uninstall ;;
*)
	echo "usage: install.sh install|uninstall" >&2
	exit 2
	;;
esac
