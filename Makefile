PYTHON ?= python3
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k real -x'
PYTEST_ARGS ?=

.PHONY: deps lint test format proto demo bench

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

# Speed and memory against the targets of the README's performance section.
bench: deps
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)
