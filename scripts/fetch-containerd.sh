#!/usr/bin/env bash
# Obtain the containerd generations shimctl is tested against, from Debian's own packages.
#
#  - The machine's own generation (bookworm: containerd 1.6) is /usr/bin/containerd & co. from
#    the system's packages (install-deps.sh installs them); it is only recorded here.
#  - Each SUITE (default: trixie sid, i.e. containerd 1.7 and 2.1): the newest `containerd` and
#    `runc` the suite offers, fetched with `apt-get download` through a private apt config whose
#    sources list is the machine's own Debian entry with the suite name swapped. The system's
#    apt state (sources, lists, status, preferences) is neither read for candidates nor changed.
#    Each .deb is unpacked with `dpkg -x` into $CACHE/pkg/<package>_<version>/, reused later.
#
# Records $CACHE/<suite>.env (key=value lines: suite, versions, binary paths) for the tests
# (tests/support/generations.py). A suite's index is refreshed at most once per MAX_AGE seconds; when
# the refresh fails (offline) and a cached copy exists, that copy is used with a warning.
#
# Usage: fetch-containerd.sh [-q|--quiet] [--refresh] [SUITE...]
#   -q       print nothing unless something was downloaded (or on errors)
#   --refresh  refresh the suites' indexes now, whatever their age
# Env: SHIMCTL_CONTAINERD_CACHE (default /var/cache/shimctl-containerd; keep it outside the
#      clone), SHIMCTL_CONTAINERD_SUITES (default "trixie sid"),
#      SHIMCTL_CONTAINERD_MAX_AGE (seconds, default 86400). Needs root (apt, dpkg -x).
set -euo pipefail

CACHE="${SHIMCTL_CONTAINERD_CACHE:-/var/cache/shimctl-containerd}"
MAX_AGE="${SHIMCTL_CONTAINERD_MAX_AGE:-86400}"
PACKAGES=(containerd runc)
quiet=0
refresh=0
suites=()
for arg in "$@"; do
	case "$arg" in
	-q | --quiet) quiet=1 ;;
	--refresh) refresh=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
		exit 0
		;;
	-*)
		echo "fetch-containerd: unknown option $arg" >&2
		exit 2
		;;
	*) suites+=("$arg") ;;
	esac
done
if ((${#suites[@]} == 0)); then
	read -r -a suites <<<"${SHIMCTL_CONTAINERD_SUITES:-trixie sid}"
fi

say() { ((quiet)) || echo "fetch-containerd: $*"; }
warn() { echo "fetch-containerd: $*" >&2; }
die() {
	warn "$*"
	exit 1
}

case "$CACHE" in
/*) ;;
*) die "SHIMCTL_CONTAINERD_CACHE must be an absolute path: $CACHE" ;;
esac
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
mkdir -p "$CACHE"
case "$(cd "$CACHE" && pwd -P)/" in
"$repo"/*) die "the cache $CACHE is inside the clone $repo: put it elsewhere" ;;
esac

log="$(mktemp)"
work="$(mktemp -d)"
trap 'rm -rf "$log" "$work"' EXIT
run_logged() { # run a command, its output to $log; the status is returned
	"$@" >"$log" 2>&1
}

# One fetch at a time per cache (install-deps may run in parallel).
exec 9>"$CACHE/.lock"
flock 9

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
[[ -n $codename ]] || die "no VERSION_CODENAME in /etc/os-release"

# The machine's own Debian source entry, with its suite swapped for $1, as a deb822 stanza.
private_sources() {
	python3 - "$codename" "$1" <<'PY'
import glob, re, sys

codename, suite = sys.argv[1], sys.argv[2]


def deb822(path):
    stanzas, cur, key = [], {}, None
    for raw in open(path, encoding="utf-8", errors="replace"):
        line = raw.rstrip("\n")
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                stanzas.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        stanzas.append(cur)
    return stanzas


def one_line(path):
    out = []
    for raw in open(path, encoding="utf-8", errors="replace"):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^(deb)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)(?:\s+(.*))?$", line)
        if not m:
            continue
        opts = dict(o.split("=", 1) for o in (m.group(2) or "").split() if "=" in o)
        st = {"types": "deb", "uris": m.group(3), "suites": m.group(4),
              "components": m.group(5) or "main"}
        if "signed-by" in opts:
            st["signed-by"] = opts["signed-by"]
        out.append(st)
    return out


stanzas = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    stanzas += deb822(path)
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
    try:
        stanzas += one_line(path)
    except OSError:
        pass
for st in stanzas:
    if st.get("enabled", "yes").lower() == "no":
        continue
    if "deb" not in st.get("types", "").split() or codename not in st.get("suites", "").split():
        continue
    print("Types: deb")
    print("URIs: " + st["uris"].split()[0])
    print("Suites: " + suite)
    print("Components: main")
    if "signed-by" in st:
        print("Signed-By: " + st["signed-by"])
    sys.exit(0)
sys.exit(f"no enabled 'deb' source entry for suite {codename} in /etc/apt")
PY
}

# Private apt config for a suite: its own sources list, lists, status, preferences and cache.
# Check-Valid-Until is off for this config only: a mirror that serves a suite's Release file
# past its Valid-Until (a stale mirror, a snapshot) still gives the binaries, whose signatures
# are checked as usual; the system's apt is not affected (apt.conf(5), Acquire::Check-Valid-Until).
setup_apt() { # $1 = suite, $2 = its private dir
	local suite="$1" d="$2"
	mkdir -p "$d/lists/partial" "$d/preferences.d" "$d/cache/archives/partial"
	: >>"$d/status"
	private_sources "$suite" >"$d/sources.sources.new"
	mv "$d/sources.sources.new" "$d/sources.sources"
	cat >"$d/apt.conf" <<EOF
Dir::Etc::sourcelist "$d/sources.sources";
Dir::Etc::sourceparts "-";
Dir::Etc::preferences "$d/preferences";
Dir::Etc::preferencesparts "$d/preferences.d";
Dir::State::Lists "$d/lists/";
Dir::State::status "$d/status";
Dir::State::extended_states "$d/extended_states";
Dir::Cache "$d/cache/";
Dir::Cache::archives "$d/cache/archives/";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT::Sandbox::User "root";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
EOF
}

apt_q=(-q -o Dpkg::Use-Pty=0)

env_get() { # $1 = env file, $2 = key
	sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n1
}

cached_ok() { # $1 = env file: every binary it names is there
	local f="$1" k p
	[[ -f $f ]] || return 1
	for k in containerd ctr shim runc; do
		p="$(env_get "$f" "$k")"
		[[ -n $p && -x $p ]] || return 1
	done
}

age_ok() { # $1 = stamp file younger than MAX_AGE
	[[ -f $1 ]] || return 1
	local now then
	now="$(date +%s)"
	then="$(stat -c %Y "$1")"
	((now - then < MAX_AGE))
}

apt_ready() { # $1 = suite: private apt config set up, index fresh; sets $conf. Status 1: failed
	local suite="$1" d="$CACHE/apt/$1"
	conf="$d/apt.conf"
	if ((!refresh)) && [[ -f $conf ]] && age_ok "$d/updated"; then
		return 0
	fi
	setup_apt "$suite" "$d"
	run_logged apt-get -c "$conf" "${apt_q[@]}" update || return 1
	touch "$d/updated"
}

candidate() { # $1 = apt.conf, $2 = package: the newest version the suite offers
	apt-cache -c "$1" show --no-all-versions "$2" 2>/dev/null | sed -n 's/^Version: //p' | head -n1
}

unpack() { # $1 = apt.conf, $2 = package: `dpkg -x` its candidate once; sets $unpacked, $version
	local conf="$1" pkg="$2"
	version="$(candidate "$conf" "$pkg")"
	[[ -n $version ]] || die "no package $pkg in $(sed -n 's/^Suites: //p' "${conf%/*}/sources.sources")"
	local dest="$CACHE/pkg/${pkg}_${version}"
	if [[ ! -f "$dest/.complete" ]]; then
		local dl="$work/dl-$pkg"
		rm -rf "$dl" && mkdir -p "$dl"
		(cd "$dl" && run_logged apt-get -c "$conf" "${apt_q[@]}" download "$pkg=$version") || {
			cat "$log" >&2
			die "apt-get download $pkg=$version failed"
		}
		local tmp="$CACHE/pkg/.tmp-${pkg}_${version}.$$"
		rm -rf "$tmp" && mkdir -p "$tmp"
		dpkg -x "$dl"/*.deb "$tmp"
		touch "$tmp/.complete"
		rm -rf "$dest"
		mv "$tmp" "$dest"
		fetched=1
	fi
	unpacked="$dest"
}

find_binary() { # $1 = unpacked dir, $2 = name
	local p
	for p in "$1/usr/sbin/$2" "$1/usr/bin/$2" "$1/sbin/$2" "$1/bin/$2"; do
		if [[ -f $p && ! -L $p && -x $p ]]; then
			echo "$p"
			return 0
		fi
	done
	die "$2 not found in $1"
}

patchelf_bin() { # a patchelf that runs here: the system's, else the machine suite's, unpacked
	if command -v patchelf >/dev/null; then
		command -v patchelf
		return 0
	fi
	local conf
	apt_ready "$codename" || {
		cat "$log" >&2
		die "$codename: apt-get update failed (for patchelf)"
	}
	unpack "$conf" patchelf
	find_binary "$unpacked" patchelf
}

# runc is linked against the suite's newer glibc (a Go binary with cgo, for libseccomp), unlike
# containerd, ctr and the shim. Then give a copy of it the suite's own dynamic loader and
# libraries (libc6, libseccomp2, unpacked next to it): ELF interpreter and RUNPATH changed,
# nothing else. A copy, not a wrapper: `runc init` re-executes /proc/self/exe.
runc_for_suite() { # $1 = apt.conf, $2 = unpacked runc binary; sets $runc, $runc_libs
	local conf="$1" orig="$2"
	runc_libs=""
	if "$orig" --version >/dev/null 2>&1; then
		runc="$orig"
		return 0
	fi
	local pe libc_dir libc_ver seccomp_dir seccomp_ver
	pe="$(patchelf_bin)"
	unpack "$conf" libc6
	libc_dir="$unpacked" libc_ver="$version"
	unpack "$conf" libseccomp2
	seccomp_dir="$unpacked" seccomp_ver="$version"
	runc_libs="libc6 $libc_ver, libseccomp2 $seccomp_ver"
	local key dest
	key="$(basename "$(dirname "$(dirname "$(dirname "$orig")")")")+libc6_${libc_ver}+libseccomp2_${seccomp_ver}"
	dest="$CACHE/runc/$key"
	runc="$dest/runc"
	if [[ -f "$dest/.complete" ]] && "$runc" --version >/dev/null 2>&1; then
		return 0
	fi
	local interp loader rpath
	interp="$("$pe" --print-interpreter "$orig")"
	loader="$(find "$libc_dir" -name "$(basename "$interp")" \( -type f -o -type l \) | head -n1)"
	[[ -n $loader ]] || die "no $(basename "$interp") in $libc_dir"
	loader="$(realpath "$loader")"
	rpath="$(dirname "$loader")"
	local lib
	while read -r lib; do
		rpath+=":$(dirname "$lib")"
	done < <(find "$seccomp_dir" -name 'libseccomp.so.*' -type f)
	local tmp="$CACHE/runc/.tmp-$key.$$"
	rm -rf "$tmp" && mkdir -p "$tmp"
	cp "$orig" "$tmp/runc"
	run_logged "$pe" --set-interpreter "$loader" --set-rpath "$rpath" --force-rpath "$tmp/runc" || {
		cat "$log" >&2
		die "patchelf failed on $orig"
	}
	touch "$tmp/.complete"
	rm -rf "$dest"
	mv "$tmp" "$dest"
	"$runc" --version >/dev/null 2>"$log" || {
		cat "$log" >&2
		die "$runc does not run, even with its suite's libc"
	}
	fetched=1
}

fetch_suite() { # $1 = suite
	local suite="$1" envf="$CACHE/$1.env" conf
	if ((!refresh)) && cached_ok "$envf" && age_ok "$CACHE/apt/$suite/updated"; then
		report "$envf"
		return 0
	fi
	if ! apt_ready "$suite"; then
		if cached_ok "$envf"; then
			warn "$suite: apt-get update failed; using the cached copy"
			report "$envf"
			return 0
		fi
		cat "$log" >&2
		die "$suite: apt-get update failed (network to the Debian mirror needed once)"
	fi
	fetched=0
	local cver cdir rver rdir
	unpack "$conf" containerd
	cver="$version" cdir="$unpacked"
	unpack "$conf" runc
	rver="$version" rdir="$unpacked"
	local containerd ctr shim cversion
	containerd="$(find_binary "$cdir" containerd)"
	ctr="$(find_binary "$cdir" ctr)"
	shim="$(find_binary "$cdir" containerd-shim-runc-v2)"
	runc_for_suite "$conf" "$(find_binary "$rdir" runc)"
	cversion="$("$containerd" --version 2>/dev/null | awk '{print $3}')" || true
	{
		echo "suite=$suite"
		echo "containerd_package=$cver"
		echo "runc_package=$rver"
		echo "containerd_version=${cversion:-unknown}"
		echo "runc_libs=$runc_libs"
		echo "containerd=$containerd"
		echo "ctr=$ctr"
		echo "shim=$shim"
		echo "runc=$runc"
	} >"$envf.new"
	mv "$envf.new" "$envf"
	if ((fetched)); then
		echo "fetch-containerd: $suite: containerd $cver, runc $rver${runc_libs:+ (with $runc_libs)}" \
			"in $CACHE"
	else
		report "$envf"
	fi
}

report() { # $1 = env file
	say "$(env_get "$1" suite): containerd $(env_get "$1" containerd_package)," \
		"runc $(env_get "$1" runc_package) ($(env_get "$1" containerd))"
}

if ((!quiet)) && command -v dpkg-query >/dev/null; then
	own_c="$(dpkg-query -W -f '${Version}' containerd 2>/dev/null || echo missing)"
	own_r="$(dpkg-query -W -f '${Version}' runc 2>/dev/null || echo missing)"
	say "$codename (system): containerd $own_c, runc $own_r (/usr/bin/containerd)"
fi
fetched=0
for suite in "${suites[@]}"; do
	[[ $suite =~ ^[a-z][a-z0-9-]*$ ]] || die "not a suite name: $suite"
	fetch_suite "$suite"
done
