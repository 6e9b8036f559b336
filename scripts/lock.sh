#!/usr/bin/env bash
# Refresh the lock files (`make lock`) from pyproject.toml with uv, pinned here, in a throwaway
# venv under build/:
#   requirements/dev.lock  the dev extra and the build backend: what `make test` installs
#   requirements/run.lock  the runtime dependencies and the build backend, at the same versions
#                          as dev.lock: what `make demo` and `make install` install
# Both are universal (every platform and Python >= 3.11 the project supports, with markers) and
# carry the sha256 of every file, so pip installs them with --require-hashes. Caps with reasons:
# requirements/constraints.txt.
# Env: BASE_PYTHON (default python3) makes the throwaway venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BASE_PYTHON="${BASE_PYTHON:-python3}"
UV_VERSION=0.13.9
venv=build/lock-venv
if ! "$venv/bin/uv" --version 2>/dev/null | grep -qx "uv $UV_VERSION"; then
	rm -rf "$venv"
	"$BASE_PYTHON" -m venv "$venv"
	"$venv/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
compile=("$venv/bin/uv" pip compile -q --universal --python-version 3.11 --generate-hashes
	--no-strip-extras --custom-compile-command "make lock" -c requirements/constraints.txt)
"${compile[@]}" pyproject.toml requirements/build.in --extra dev -o requirements/dev.lock
"${compile[@]}" pyproject.toml requirements/build.in -c requirements/dev.lock -o requirements/run.lock
echo "lock: $(grep -c '==' requirements/dev.lock) pins in requirements/dev.lock," \
	"$(grep -c '==' requirements/run.lock) in requirements/run.lock"
