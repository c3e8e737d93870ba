# The two commands of the README: `make demo` and `make test`. Both work on a fresh machine: they create
# the virtualenv, install the package and the system packages they need, and start the services they use
# (reusing running ones, stopping the ones they started).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test unit venv system bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

system:
	bash scripts/install-system-packages.sh

demo: venv system
	$(BIN)/python scripts/services.py with-docker -- bash scripts/demo.sh

# Every tier: unit/ (no services), store/ (local store, remotes, API), containers/ (Docker), scheduler/
# (luigid, Chromium), batch/ (moto's AWS Batch). `make unit` runs the fast tier alone (seconds, no services).
# The package is compiled first: the tests start ~2,000 dsdt processes, and under PYTHONDONTWRITEBYTECODE=1
# each would compile every module it imports again.
test: venv system
	$(BIN)/python -m compileall -q disdat_luigi > /dev/null
	$(BIN)/python scripts/services.py with-docker -- $(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
