#!/usr/bin/env bash
# The README's two commands on a fresh Debian 12 (bookworm) node, as a new user runs them.
#
#  1. A minimal bookworm root file system (mmdebstrap --variant=minbase, plus only git, make,
#     python3 and ca-certificates: what a user needs to have cloned at all), built once and
#     cached OUTSIDE the clone in $CACHE/root-<key>, the key a hash of what it contains (suite,
#     packages, architecture, this machine's apt sources and extra CA certificates, the recipe).
#     This machine's apt sources and CA certificates are copied in so that it reaches the same
#     mirrors; nothing else of this machine's is.
#  2. Each run on a fresh copy: an overlayfs over the cached root (the cache is never written),
#     in a mount namespace and a PID namespace of its own. The overlay is the chroot's root and
#     a mount point, as runc's pivot_root needs; proc (of the new PID namespace), /sys (with the
#     host's cgroup mounts), /dev (bind), a new /dev/pts, tmpfs /dev/shm, /run and /tmp are
#     mounted in it, and /etc/resolv.conf and /etc/hosts bound read-only for name resolution.
#  3. `git clone` of this checkout's HEAD (commit first: uncommitted changes are not tested)
#     into /root/shimctl, then `make demo` and `make test` there, exactly as the README writes
#     them, with a clean environment and CI=true; then `make install`, the installed command,
#     `make uninstall`. Each step is reported with its name, seconds and ok/failed, and no
#     process may be left over after a step. The environment is empty but for HOME, PATH, LANG,
#     CI=true and the caller's TERM.
#  4. Everything is undone, also on failure or interruption: the processes left in the PID
#     namespace are killed by PID (all of them were started here), the mounts go with the mount
#     namespace (and are unmounted first), the run's directory is removed. Logs of the last
#     run stay in $CACHE/logs/<step>.log.
#
# Usage: fresh-node.sh [--rebuild] [--keep-going]
#   --rebuild      build the root file system again even when a cached one exists
#   --keep-going   run the later steps after a failed one
# Env: SHIMCTL_FRESH_NODE_CACHE (default /var/cache/shimctl-fresh-node). Needs root.
set -euo pipefail

CACHE="${SHIMCTL_FRESH_NODE_CACHE:-/var/cache/shimctl-fresh-node}"
SUITE=bookworm
INCLUDE=git,make,python3,ca-certificates
RECIPE=1 # bump when the way the root is made changes
CLONE=/root/shimctl

say() { echo "fresh-node: $*"; }
die() {
	echo "fresh-node: error: $*" >&2
	exit 1
}
now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- the inner part: PID 1 of its own PID namespace, in its own mount namespace -----------
if [[ ${1:-} == --inner ]]; then
	shift
	root="$1" run="$2" head="$3" repo="$4" keep_going="$5" term="$6"
	merged="$run/merged"
	steps_file="$run/steps"

	# These run in this shell itself, never in a subshell ($(...), a pipe), which would be one
	# of the processes listed: results go through files.
	namespace_pids() { # every live, non-zombie process of this PID namespace but PID 1
		local stat pid state
		: >"$run/pids"
		for stat in "$merged"/proc/[0-9]*/stat; do
			pid="${stat%/stat}" pid="${pid##*/}"
			[[ $pid == 1 ]] && continue
			state="$(sed -n 's/^.*) \([A-Za-z]\) .*$/\1/p' "$stat" 2>/dev/null)" || continue
			if [[ -n $state && $state != Z ]]; then echo "$pid" >>"$run/pids"; fi
		done
	}
	kill_leftovers() { # by PID: each was started in this namespace, i.e. by this script
		local pid
		namespace_pids
		while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$run/pids"
		[[ -s $run/pids ]] && sleep 0.5
		return 0
	}
	leftovers() { # "pid argv" of each process a step left behind, into $run/left
		local pid
		namespace_pids
		: >"$run/left"
		while read -r pid; do
			[[ -d $merged/proc/$pid ]] || continue
			echo "$pid $(tr '\0' ' ' 2>/dev/null <"$merged/proc/$pid/cmdline" | cut -c1-160)" \
				>>"$run/left"
		done <"$run/pids"
	}
	inner_cleanup() {
		kill_leftovers
		umount -R "$merged" 2>/dev/null || umount -R -l "$merged" 2>/dev/null || true
	}
	trap inner_cleanup EXIT

	mkdir -p "$run/upper" "$run/work" "$merged"
	mount -t overlay overlay -o "lowerdir=$root,upperdir=$run/upper,workdir=$run/work" "$merged"
	mount -t proc proc "$merged/proc"
	mount --rbind /sys "$merged/sys"
	mount --make-rslave "$merged/sys"
	mount --bind /dev "$merged/dev"
	mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$merged/dev/pts"
	mount --bind "$merged/dev/pts/ptmx" "$merged/dev/ptmx"
	mount -t tmpfs -o mode=1777 tmpfs "$merged/dev/shm"
	mount -t tmpfs -o mode=0755 tmpfs "$merged/run"
	mount -t tmpfs -o mode=1777 tmpfs "$merged/tmp"
	for f in /etc/resolv.conf /etc/hosts; do
		[[ -e $f ]] || continue
		rm -f "$merged$f" && touch "$merged$f"
		mount --bind -o ro "$(realpath "$f")" "$merged$f"
	done

	failed=0
	step() { # $1 = name, then the command (run in the chroot unless it is a function)
		local name="$1" t0 t1 status=0
		shift
		if ((failed && !keep_going)); then
			printf '%s\t%s\t%s\n' "$name" "-" "skipped" >>"$steps_file"
			return 0
		fi
		say "step $name ..."
		local log="$run/logs/$name.log"
		t0="$(now)"
		"$@" >"$log" 2>&1 || status=$?
		t1="$(now)"
		leftovers
		if [[ -s $run/left ]]; then
			{
				echo "fresh-node: processes left over after $name:"
				cat "$run/left"
			} >>"$log"
			((status)) || status=99
			kill_leftovers
		fi
		local result=ok
		if ((status)); then
			result="failed (exit $status)"
			failed=1
			echo "---- the last lines of $name's output ($CACHE/logs/$name.log):" >&2
			tail -n 60 "$log" >&2
			echo "----" >&2
		fi
		local summary
		summary="$(grep -E '^[0-9]+ (passed|failed)|[0-9]+ (passed|failed).* in [0-9.]+s' "$log" |
			tail -n1 | tr -d '=' | sed 's/^ *//;s/ *$//')" || true
		printf '%s\t%s\t%s%s\n' "$name" "$(seconds "$t0" "$t1")" "$result" \
			"${summary:+ ($summary)}" >>"$steps_file"
		say "step $name: $result in $(seconds "$t0" "$t1") s"
	}
	# A user's login on the node: root, a clean environment (but the caller's TERM, as a login
	# from that terminal has), the clone as working directory.
	in_node() {
		chroot "$merged" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM="$term" CI=true \
			PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			/bin/bash -c "cd $CLONE && $1"
	}
	clone() {
		git clone --quiet --no-hardlinks "$repo" "$merged$CLONE"
		git -C "$merged$CLONE" checkout --quiet --detach "$head"
		git -C "$merged$CLONE" log -1 --format='%H %s'
	}
	installed() { # make install's command, units, completions and man page are there
		in_node 'make install'
		in_node 'command -v shimctl && shimctl --version && shimctl version --json >/dev/null &&
			test -f /usr/local/lib/systemd/system/shimctl-gc.service &&
			test -f /usr/local/lib/systemd/system/shimctl-gc.timer &&
			test -f /usr/local/share/bash-completion/completions/shimctl &&
			test -f /usr/local/share/zsh/site-functions/_shimctl &&
			test -f /usr/local/share/fish/vendor_completions.d/shimctl.fish &&
			test -f /usr/local/share/man/man1/shimctl.1 &&
			/opt/shimctl/bin/python -c "import shimctl, sys; assert \"/opt/shimctl/\" in shimctl.__file__, shimctl.__file__"'
		in_node 'make uninstall'
		in_node '! command -v shimctl && test ! -e /opt/shimctl &&
			test ! -e /usr/local/lib/systemd/system/shimctl-gc.service &&
			test ! -e /usr/local/share/man/man1/shimctl.1'
	}
	step clone clone
	step "make-demo" in_node 'make demo'
	step "make-test" in_node 'make test'
	step "make-install" installed
	exit "$failed"
fi

# --- the outer part ---------------------------------------------------------------------------
rebuild=0 keep_going=0
for arg in "$@"; do
	case "$arg" in
	--rebuild) rebuild=1 ;;
	--keep-going) keep_going=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
		exit 0
		;;
	*) die "unknown argument $arg" ;;
	esac
done
[[ $EUID -eq 0 ]] || die "needs root (chroot, mounts, namespaces)"
case "$CACHE" in
/*) ;;
*) die "SHIMCTL_FRESH_NODE_CACHE must be an absolute path: $CACHE" ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
mkdir -p "$CACHE"
case "$(cd "$CACHE" && pwd -P)/" in
"$repo"/*) die "the cache $CACHE is inside the clone $repo: put it elsewhere" ;;
esac
head="$(git -C "$repo" rev-parse HEAD)"
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]]; then
	say "warning: uncommitted changes in $repo are not tested (HEAD ${head:0:12} is)"
fi
for tool in unshare chroot mount umount; do
	command -v "$tool" >/dev/null || die "$tool not found (util-linux, coreutils)"
done

t_start="$(now)"
results=()
record() { results+=("$(printf '%s\t%s\t%s' "$@")"); }

# This machine's enabled apt sources (deb822 .sources and one-line .list files) and the extra
# CA certificates it trusts: what the root gets, and part of its cache key.
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
	[[ -f $f ]] && grep -qE '^[[:space:]]*(deb|Types:)' "$f" && sources+=("$f")
done
((${#sources[@]})) || die "no apt sources in /etc/apt"
cas=()
for f in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
	[[ -f $f ]] && cas+=("$f")
done
key="$(
	{
		echo "recipe=$RECIPE suite=$SUITE include=$INCLUDE arch=$(dpkg --print-architecture)"
		cat "${sources[@]}"
		((${#cas[@]})) && sha256sum "${cas[@]}"
	} | sha256sum | cut -c1-16
)"
root="$CACHE/root-$key"

exec 9>"$CACHE/.lock"
flock 9 # one run at a time per cache

t0="$(now)"
if ((rebuild)) || [[ ! -f $root/.complete ]]; then
	if ! command -v mmdebstrap >/dev/null; then
		say "apt-get install mmdebstrap"
		apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -q -o Dpkg::Use-Pty=0 "$@" >/dev/null; }
		apt_get update || die "apt-get update failed"
		apt_get install -y --no-install-recommends mmdebstrap || die "apt-get install mmdebstrap failed"
	fi
	say "building the $SUITE root file system in $root"
	tmp="$CACHE/.tmp-root-$key.$$"
	rm -rf "$tmp"
	mkdir -p "$CACHE/logs"
	if ! mmdebstrap --quiet --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp" \
		"${sources[@]}" >"$CACHE/logs/root.log" 2>&1; then
		tail -n 40 "$CACHE/logs/root.log" >&2
		rm -rf "$tmp"
		die "mmdebstrap failed"
	fi
	if ((${#cas[@]})); then
		cp "${cas[@]}" "$tmp/usr/local/share/ca-certificates/"
		chroot "$tmp" update-ca-certificates >>"$CACHE/logs/root.log" 2>&1
	fi
	echo "$key" >"$tmp/.complete"
	rm -rf "$root"
	mv "$tmp" "$root"
	# Roots of other keys are stale.
	for old in "$CACHE"/root-*; do
		[[ $old == "$root" ]] || rm -rf "$old"
	done
	record "root file system" "$(seconds "$t0" "$(now)")" "ok (built)"
else
	record "root file system" "$(seconds "$t0" "$(now)")" "ok (cached)"
fi

run="$(mktemp -d "$CACHE/run.XXXXXX")"
inner_pid=""
cleanup() {
	local status=$?
	if [[ -n $inner_pid ]] && kill -0 "$inner_pid" 2>/dev/null; then
		# unshare's child is PID 1 of its namespace: killing it ends every process in it.
		kill -TERM "$inner_pid" 2>/dev/null || true
		wait "$inner_pid" 2>/dev/null || true
	fi
	if [[ -d $run/logs ]]; then
		rm -rf "$CACHE/logs.new" && cp -a "$run/logs" "$CACHE/logs.new"
		cp -a "$CACHE/logs/root.log" "$CACHE/logs.new/" 2>/dev/null || true
		rm -rf "$CACHE/logs" && mv "$CACHE/logs.new" "$CACHE/logs"
	fi
	if grep -qs " $run/" /proc/self/mounts; then
		say "warning: mounts under $run remain" >&2
	else
		rm -rf "$run"
	fi
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$run/logs"
: >"$run/steps"

say "HEAD ${head:0:12} of $repo on a fresh $SUITE root (a copy of $root)"
status=0
# --kill-child: if this script dies, the namespace's PID 1 is killed and all in it with it.
# env --default-signal: a command started with & by a non-interactive shell ignores SIGINT and
# SIGQUIT, and so would everything under it (the suite interrupts shimctl with SIGINT).
unshare --mount --pid --fork --kill-child --propagation private \
	env --default-signal=INT,QUIT \
	bash "${BASH_SOURCE[0]}" --inner "$root" "$run" "$head" "$repo" "$keep_going" "${TERM:-dumb}" \
	9>&- & # the cache lock stays with this shell, not with what the suite starts
inner_pid=$!
wait "$inner_pid" || status=$?
inner_pid=""

while IFS= read -r line; do results+=("$line"); done <"$run/steps"
echo
printf '%-18s %9s  %s\n' step seconds result
for line in "${results[@]}"; do
	IFS=$'\t' read -r name secs result <<<"$line"
	printf '%-18s %9s  %s\n' "$name" "$secs" "$result"
done
printf '%-18s %9s\n' total "$(seconds "$t_start" "$(now)")"
if ((status)); then
	say "FAILED (logs: $CACHE/logs/)"
	exit 1
fi
say "ok"
