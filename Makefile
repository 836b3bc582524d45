# meshbench: `make run` runs the local benchmark pipeline end to end; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install system-packages lint format lock ui stop clean compose-check

# uv comes from PyPI into .venv (by the venv's own pip) and runs from there: Debian's python3
# has no pip and refuses installs into itself (PEP 668), and nothing goes into the system Python.
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
# .venv is made from the first python3 on PATH outside an activated virtualenv: an unrelated
# one (uv's have no pip) must not become the base of the project's environment.
BASE_PYTHON := $(shell IFS=:; for dir in $$PATH; do \
	[ -n "$$VIRTUAL_ENV" ] && [ "$$dir" = "$$VIRTUAL_ENV/bin" ] && continue; \
	[ -x "$$dir/python3" ] && { echo "$$dir/python3"; break; }; done)

run: install
	$(VENV)/bin/meshbench demo

ui: install
	$(VENV)/bin/meshbench ui

# Stops `make ui` (Airflow and everything it started) and this checkout's private Postgres.
stop:
	@test -x $(VENV)/bin/meshbench && $(VENV)/bin/meshbench stop || echo "nothing installed, nothing to stop"

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

install: $(STAMP)

# Debian packages first: python3-venv is what makes .venv possible on Debian's Python.
system-packages:
	@PYTHON="$(BASE_PYTHON)" ./scripts/install-system-packages.sh

# A .venv without pip (made by uv, or left half-made) is made anew.
$(UV_STAMP): | system-packages
	@test -n "$(BASE_PYTHON)" || { echo "meshbench: no python3 on PATH (Debian: apt-get install python3)" >&2; exit 1; }
	@$(PY) -m pip --version >/dev/null 2>&1 || { \
		test ! -e $(VENV) || echo "meshbench: $(VENV) has no pip; making it anew"; \
		rm -rf $(VENV) && $(BASE_PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; }
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@rm -f $(VENV)/.uv-* && touch $(UV_STAMP)

$(STAMP): $(UV_STAMP) requirements.lock requirements-nodeps.txt pyproject.toml | system-packages
	$(UV) pip install --quiet --python $(PY) -r requirements.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	$(UV) pip install --quiet --python $(PY) --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock: $(UV_STAMP)
	$(UV) pip compile --python-version 3.11 --no-header --quiet requirements.txt requirements-dev.txt -o requirements.lock

clean:
	rm -rf $(VENV) .state

# ---- compose-check: docker-compose.yaml brought up for real (its own CI step) ----------
# Builds stand-in images from Debian's packages, runs a benchmark DAG through the Celery
# stack, tears it down. Needs a Docker engine and docker-compose; about 10 minutes.
compose-check: install
	@./scripts/ensure-docker-engine
	MESHBENCH_COMPOSE_CHECK=1 $(VENV)/bin/pytest tests/compose -q -p no:cacheprovider $(PYTEST_ARGS)
	@cat .state/compose-check-last.json
