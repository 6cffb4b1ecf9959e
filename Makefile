# The two commands of the README live here; CI (.ci/run) calls `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The framework adapters: one distribution each, installed into the same environment.
INTEGRATIONS := integrations/langchain integrations/crewai integrations/llamaindex

.PHONY: demo test lint typecheck unit chromium bench bench-full clean

$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(INTEGRATIONS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# One resolution for everything: crewai pins openai<3 and pydantic<2.13, which the core
	# and the other adapters accept.
	$(BIN)/pip install --quiet -e '.[providers,postgres,service,dev]' \
		$(foreach i,$(INTEGRATIONS),-e '$(i)[dev]')
	touch $(STAMP)

## First README command: set up and run the demo (embedded SQLite, simulator, no API keys).
demo: $(STAMP)
	$(BIN)/python -m kalibr_core.demo

## Second README command: set up and run the whole test suite plus ruff and mypy.
test: $(STAMP) lint typecheck unit

unit: $(STAMP) chromium
	$(BIN)/python -m pytest
	# Each adapter runs with its own pytest configuration (rootdir = the package).
	@for i in $(INTEGRATIONS); do \
		echo "== $$i"; (cd $$i && $(CURDIR)/$(BIN)/python -m pytest) || exit 1; \
	done

## The browser tests drive Debian's chromium through Playwright, never a downloaded browser.
## Installed here when missing and running as root (CI); otherwise those tests skip and say why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update && apt-get install -y --no-install-recommends chromium; \
	else echo "note: no chromium (apt-get install chromium); the browser tests will skip"; fi

lint: $(STAMP)
	$(BIN)/ruff format --check kalibr_core tests benchmarks examples
	$(BIN)/ruff check kalibr_core tests benchmarks examples
	@for i in $(INTEGRATIONS); do \
		(cd $$i && $(CURDIR)/$(BIN)/ruff format --check . && $(CURDIR)/$(BIN)/ruff check .) \
		|| exit 1; \
	done

typecheck: $(STAMP)
	$(BIN)/mypy
	@for i in $(INTEGRATIONS); do (cd $$i && $(CURDIR)/$(BIN)/mypy) || exit 1; done

## Routing-quality and speed benchmarks (quick mode; bench-full writes docs/benchmarks.md).
bench: $(STAMP)
	$(BIN)/python -m benchmarks --quick

bench-full: $(STAMP)
	$(BIN)/python -m benchmarks --full

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
