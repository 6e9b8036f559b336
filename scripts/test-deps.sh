#!/usr/bin/env bash
# The suite on other releases of the dependencies than the lock's, in a throwaway venv:
#
#   latest  the newest release of every dependency, runtime and dev (pip install --upgrade
#           --upgrade-strategy eager, no lock, no caps; the dev extra without grpcio-tools,
#           which only `make proto` needs and which caps protobuf below 7): lint (ruff, ruff format,
#           mypy --strict: a dependency's new types show there) and the suite. What users who
#           `pip install shimctl` today get, seen before they see it.
#   lowest  pyproject.toml's lower bounds of the runtime dependencies exactly (`>=X` as `==X`,
#           wheels only), the dev tools at their locked versions: the suite.
#
# Every step runs even when one fails; the exit status is non-zero when any failed. The venv is
# removed afterwards. Needs what `make test` needs (make test-latest depends on make deps).
#
# Usage: test-deps.sh latest|lowest [PYTEST_ARGS...]
# Env: BASE_PYTHON (default python3), TEST_DEPS_KEEP=1 keeps the venv (its path is printed).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-}"
shift || true
case "$mode" in
latest | lowest) ;;
*)
	echo "usage: test-deps.sh latest|lowest [PYTEST_ARGS...]" >&2
	exit 2
	;;
esac
BASE_PYTHON="${BASE_PYTHON:-python3}"
tmp="$(mktemp -d "/tmp/shimctl-test-$mode.XXXXXX")"
venv="$tmp/venv"
if [[ ${TEST_DEPS_KEEP:-} == 1 ]]; then
	echo "test-$mode: keeping $venv"
else
	trap 'rm -rf "$tmp"' EXIT
fi
py="$venv/bin/python"
pip=("$py" -m pip install -q --disable-pip-version-check --root-user-action=ignore)
say() { echo "test-$mode: $*"; }
die() {
	echo "test-$mode: error: $*" >&2
	exit 1
}

"$BASE_PYTHON" -m venv "$venv" || die "$BASE_PYTHON -m venv failed"
"${pip[@]}" --upgrade pip || die "upgrading pip failed"

# The runtime dependencies, by name, from pyproject.toml.
runtime() {
	"$BASE_PYTHON" - "$1" <<'PY'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0)
    if sys.argv[1] == "names":
        print(name)
    else:  # the lower bound, pinned
        m = re.search(r">=\s*([^,;\s]+)", dep)
        if not m:
            sys.exit(f"{dep}: no lower bound")
        print(f"{name}=={m.group(1)}")
PY
}

if [[ $mode == latest ]]; then
	# The dev extra but grpcio-tools: only `make proto` uses it, and it caps protobuf below 7.
	"$BASE_PYTHON" - >"$tmp/dev.txt" <<'PY' || die "reading pyproject.toml failed"
import tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
print("\n".join(d for d in extra if not d.lower().startswith("grpcio-tools")))
PY
	"${pip[@]}" --upgrade --upgrade-strategy eager -e . -r "$tmp/dev.txt" || die "pip install failed"
else
	pins="$tmp/lowest.txt"
	runtime pins >"$pins" || die "reading pyproject.toml failed"
	"${pip[@]}" --only-binary=:all: -r "$pins" ||
		die "the lower bounds do not install from wheels for $("$py" -V): raise them"
	# The dev tools named in the dev extra, at the versions the lock has, around those pins.
	"$BASE_PYTHON" - >"$tmp/dev.txt" <<'PY' || die "reading the lock failed"
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["dev"]
names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower().replace("_", "-") for d in extra}
for line in open("requirements/dev.lock"):
    m = re.match(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line)
    if m and m.group(1).lower().replace("_", "-") in names:
        print(f"{m.group(1)}=={m.group(2)}")
PY
	"${pip[@]}" -c "$pins" -r "$tmp/dev.txt" || die "the dev tools do not install beside the lower bounds"
	"${pip[@]}" --no-deps --no-build-isolation -e . || die "installing shimctl failed"
fi
"$py" -m pip check || die "pip check failed"
say "runtime dependencies: $(
	runtime names | while read -r name; do
		printf '%s %s, ' "$name" "$("$py" -c "import importlib.metadata as m; print(m.version('$name'))")"
	done | sed 's/, $//'
)"

failed=()
run() { # $1 = step name, then its command
	local name="$1"
	shift
	say "$name"
	"$@" || failed+=("$name")
}
"$py" -m compileall -q shimctl >/dev/null
if [[ $mode == latest ]]; then
	say "dev tools: $("$py" -m ruff --version), $("$py" -m mypy --version | cut -d' ' -f1,2)"
	run "ruff check" "$py" -m ruff check shimctl tests tools
	run "ruff format --check" "$py" -m ruff format --check shimctl tests tools
	run "mypy --strict" "$py" -m mypy --strict shimctl tools
fi
deselect=()
if [[ $mode == lowest ]]; then
	# The committed docs/json-schema.md and completions/ are what `make docs` generates with
	# the locked pydantic and click (older ones word them differently: descriptions from
	# docstrings since pydantic 2.13, click's zsh script since 8.1.4); not a runtime claim.
	deselect=(--deselect tests/unit/tools/test_docgen.py::test_generated_files_are_current)
fi
run "pytest" "$py" -m pytest -p no:benchmark -p no:cacheprovider -n 2 -q "${deselect[@]}" "$@"
if ((${#failed[@]})); then
	say "FAILED: $(printf '%s, ' "${failed[@]}" | sed 's/, $//')"
	exit 1
fi
say "ok"
