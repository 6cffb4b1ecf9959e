# The two commands of the README live here; CI (.ci/run) calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-full clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[providers,postgres,service,dev]'
	touch $(STAMP)

## First README command: set up and run the demo (embedded SQLite, simulator, no API keys).
demo: $(STAMP)
	$(BIN)/python -m kalibr_core.demo

## Second README command: set up and run the whole test suite plus ruff and mypy.
test: $(STAMP) lint typecheck unit

unit: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff format --check kalibr_core tests benchmarks examples
	$(BIN)/ruff check kalibr_core tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

## Routing-quality and speed benchmarks (quick mode; bench-full writes docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
