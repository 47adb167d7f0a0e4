# Two entry points for a fresh machine with Python 3.11+: `make demo` and `make test`.
# Each creates the virtualenv and installs what it needs on first use, from the lock files in
# requirements/ only (every package pinned and hash-checked), so every machine runs the same versions.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tool that writes the lock files; used by `make lock` only, never to install.
UV_VERSION := 0.13.9
# The package itself: built by the locked setuptools, its dependencies already installed from a lock.
INSTALL_SELF := $(BIN)/pip install --quiet --no-deps --no-build-isolation -e .

.PHONY: demo test scenarios lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# One stamp per set: `make demo` installs the demo's packages only, `make test` adds the test tools.
$(VENV)/.installed-demo: requirements/demo.txt requirements/build.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/build.txt -r requirements/demo.txt
	$(INSTALL_SELF)
	touch $@

$(VENV)/.installed-test: requirements/test.txt requirements/build.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r requirements/build.txt -r requirements/test.txt
	$(INSTALL_SELF)
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/order-sync demo

# scripts/ensure-postgres readies the server at TEST_DATABASE_URL where it can; where it cannot (no
# root, no Debian), the tests start an embedded PostgreSQL of their own (tests/database_server.py).
test: $(VENV)/.installed-test
	scripts/ensure-postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest

# The fault scenarios CI runs at small size: no loss with no faults, none under `lossy` (drops,
# duplicates, lost pushes, a 20 s outage, bans, a SIGKILL, killed database connections), and none
# under `hostile` (lossy + detail lag, broken values, NUL text, malformed list pages, an app-wide
# error window, unknown headers, a NUL close reason, an oversize frame), with nothing left unresolved.
scenarios: $(VENV)/.installed-test
	scripts/ensure-postgres
	$(BIN)/python -m bench.scenario --preset none --size small
	$(BIN)/python -m bench.scenario --preset lossy --size small
	$(BIN)/python -m bench.scenario --preset hostile --size small

# Refresh requirements/*.txt after a change to pyproject.toml's dependency lists (scripts/lock says
# how); `make lock UPGRADE=1` moves every pin to the newest release its range allows.
lock: | $(BIN)/python
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	UV=$(BIN)/uv UPGRADE=$(UPGRADE) scripts/lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
