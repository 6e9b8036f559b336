PYTHON ?= python3
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k real -x'
PYTEST_ARGS ?=

.PHONY: deps lint test format proto demo bench docs schema completions man fuzz

deps:
	PYTHON=$(PYTHON) bash scripts/install-deps.sh

lint:
	$(PYTHON) -m ruff check shimctl tests
	$(PYTHON) -m ruff format --check shimctl tests
	$(PYTHON) -m mypy --strict shimctl

# deps first (a fresh machine passes with `make test` alone), then lint, then the suite.
test: deps
	$(MAKE) --no-print-directory lint PYTHON=$(PYTHON)
	$(PYTHON) -m pytest -p no:benchmark -n 2 -q $(PYTEST_ARGS)

format:
	$(PYTHON) -m ruff format shimctl tests

proto: deps
	PYTHON=$(PYTHON) bash scripts/gen-proto.sh

demo: deps
	PYTHON=$(PYTHON) bash scripts/demo.sh

# Longer fuzzing of everything a hostile shim or state dir feeds the decoders (hypothesis):
# FUZZ_EXAMPLES cases per test instead of the suite's few hundred.
FUZZ_EXAMPLES ?= 20000
fuzz:
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTHON) -m pytest -p no:benchmark -n 2 -q \
		tests/unit/shim/test_fuzz_ttrpc.py tests/unit/shim/test_ttrpc_codec.py -k fuzz $(PYTEST_ARGS)

# Speed and memory against the targets of the README's performance section.
bench: deps
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

# Generated, committed artefacts (tests fail when they are stale): docs/json-schema.md from the
# result dataclasses, completions/ from the click app, the man page docs/shimctl.1.
docs: schema completions man

schema:
	$(PYTHON) -m tools.docgen schema

completions:
	$(PYTHON) -m tools.docgen completions

man:
	$(PYTHON) -m tools.docgen man
