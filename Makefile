# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates the virtualenv and installs what it needs on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test scenarios clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/order-sync demo

test: $(VENV)/.installed
	scripts/ensure-postgres
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# The fault scenarios CI runs at small size: no loss with no faults, and none under `lossy`
# (drops, duplicates, lost pushes, a 20 s outage, bans, a SIGKILL, killed database connections).
scenarios: $(VENV)/.installed
	scripts/ensure-postgres
	$(BIN)/python -m bench.scenario --preset none --size small
	$(BIN)/python -m bench.scenario --preset lossy --size small

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
