# meshbench: `make run` runs the local benchmark pipeline end to end; `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install lint format lock ui stop clean compose-check

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
	@./scripts/install-system-packages.sh

$(STAMP): requirements.lock requirements-nodeps.txt pyproject.toml
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -x $(PY) || python3 -m uv venv --quiet --python python3 $(VENV)
	python3 -m uv pip install --quiet --python $(PY) -r requirements.lock
	python3 -m uv pip install --quiet --python $(PY) --no-deps -e .
	python3 -m uv pip install --quiet --python $(PY) --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

lock:
	python3 -m uv pip compile --python-version 3.11 --no-header --quiet requirements.txt requirements-dev.txt -o requirements.lock

clean:
	rm -rf $(VENV) .state

# ---- compose-check: docker-compose.yaml brought up for real (its own CI step) ----------
# Builds stand-in images from Debian's packages, runs a benchmark DAG through the Celery
# stack, tears it down. Needs a Docker engine and docker-compose; about 10 minutes.
compose-check: install
	@./scripts/ensure-docker-engine
	MESHBENCH_COMPOSE_CHECK=1 $(VENV)/bin/pytest tests/compose -q -p no:cacheprovider $(PYTEST_ARGS)
	@cat .state/compose-check-last.json
