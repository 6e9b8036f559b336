# Each target's `## ` comment is its line in `make help` (the default target).
# The project's own virtual environment is $(VENV), made from $(BASE_PYTHON) by
# scripts/install-deps.sh; PYTHON=/path/to/python uses that interpreter instead.
VENV ?= .venv
BASE_PYTHON ?= python3
PYTHON ?= $(VENV)/bin/python
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k real -x'
PYTEST_ARGS ?=
PYTEST = $(PYTHON) -m pytest -p no:benchmark
DEPS = VENV=$(VENV) BASE_PYTHON=$(BASE_PYTHON) PYTHON=$(PYTHON) bash scripts/install-deps.sh
# make install / uninstall (scripts/install.sh): where things go.
PREFIX ?= /usr/local
SHIMCTL_HOME ?= /opt/shimctl
INSTALL_VARS = PREFIX=$(PREFIX) SHIMCTL_HOME=$(SHIMCTL_HOME) $(if $(UNITDIR),UNITDIR=$(UNITDIR))

.DEFAULT_GOAL := help
.PHONY: help deps deps-python lint check test test-latest test-lowest coverage lock format \
	proto demo bench docs schema completions man fuzz install uninstall fresh-node

help: ## this list
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## what make test needs: Debian packages, containerd 1.7/2.1, the venv with the dev tools
	@$(DEPS) test

deps-python: ## the venv with the dev tools only (no root, no apt)
	@$(DEPS) python

lint: deps-python ## ruff, ruff format --check, mypy --strict
	$(PYTHON) -m ruff check shimctl tests tools
	$(PYTHON) -m ruff format --check shimctl tests tools
	$(PYTHON) -m mypy --strict shimctl tools tests

check: lint ## lint + the unit tests: no root, no apt, seconds
	$(PYTEST) -n 2 -q tests/unit $(PYTEST_ARGS)

# deps first (a fresh machine passes with `make test` alone), then lint, then the suite.
test: deps ## what CI runs: deps, lint, the whole suite (needs root)
	@$(MAKE) --no-print-directory lint VENV=$(VENV) PYTHON=$(PYTHON)
	$(PYTEST) -n 2 -q $(PYTEST_ARGS)

test-latest: deps ## the newest release of every dependency, in a throwaway venv: lint + suite
	@BASE_PYTHON=$(BASE_PYTHON) bash scripts/test-deps.sh latest $(PYTEST_ARGS)

test-lowest: deps ## pyproject's lower bounds exactly, in a throwaway venv: the suite
	@BASE_PYTHON=$(BASE_PYTHON) bash scripts/test-deps.sh lowest $(PYTEST_ARGS)

# The report is made also when a test fails; the exit status is the suite's.
COVERAGE = COVERAGE_FILE=$(CURDIR)/build/coverage/.coverage $(PYTHON)
coverage: deps ## the suite under coverage.py (subprocesses too), a figure per package
	@rm -rf build/coverage && mkdir -p build/coverage
	@status=0; $(COVERAGE) -m coverage run -m pytest -p no:benchmark -n 2 -q $(PYTEST_ARGS) \
		|| status=$$?; \
	$(COVERAGE) -m coverage combine -q && $(COVERAGE) scripts/coverage-by-package.py; \
	exit $$status

lock: ## refresh requirements/*.lock from pyproject.toml (uv, in a throwaway venv)
	@BASE_PYTHON=$(BASE_PYTHON) bash scripts/lock.sh

format: deps-python ## ruff format
	$(PYTHON) -m ruff format shimctl tests tools

proto: deps ## regenerate shimctl/shim/proto/*_pb2.py(i)
	PYTHON=$(PYTHON) CHECK_PYTHON=$(PYTHON) bash scripts/gen-proto.sh

demo: ## shims on a private temp root/state, listed and cleaned (needs root)
	@$(DEPS) demo
	@PYTHON=$(PYTHON) bash scripts/demo.sh

# Longer fuzzing of everything a hostile shim or state dir feeds the decoders (hypothesis):
# FUZZ_EXAMPLES cases per test instead of the suite's few hundred.
FUZZ_EXAMPLES ?= 20000
fuzz: deps-python ## longer fuzzing of the decoders (FUZZ_EXAMPLES cases per test)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) -n 2 -q \
		tests/unit/shim/test_fuzz_ttrpc.py tests/unit/shim/test_ttrpc_codec.py -k fuzz $(PYTEST_ARGS)

bench: deps ## speed and memory against the README's performance targets
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

# Generated, committed artefacts (tests fail when they are stale): docs/json-schema.md from the
# result dataclasses, completions/ from the click app, the man page docs/shimctl.1.
docs: schema completions man ## regenerate docs/json-schema.md, completions/, docs/shimctl.1

schema: deps-python ## regenerate docs/json-schema.md
	$(PYTHON) -m tools.docgen schema

completions: deps-python ## regenerate completions/
	$(PYTHON) -m tools.docgen completions

man: deps-python ## regenerate docs/shimctl.1
	$(PYTHON) -m tools.docgen man

install: ## a venv in /opt/shimctl, /usr/local/bin/shimctl, systemd units, completions, man page
	@BASE_PYTHON=$(if $(filter command line environment,$(origin BASE_PYTHON)),$(BASE_PYTHON)) \
		$(INSTALL_VARS) bash scripts/install.sh install

uninstall: ## remove what make install put there
	@$(INSTALL_VARS) bash scripts/install.sh uninstall

fresh-node: ## the README's two commands on a fresh Debian 12 root file system (needs root)
	@bash scripts/fresh-node.sh
