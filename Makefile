# robotoff-batch: `make demo` runs the main job on embedded defaults, `make test` runs the checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ROBOTOFF_BATCH_HOME ?= $(CURDIR)/.robotoff-batch
export DAGSTER_HOME ?= $(ROBOTOFF_BATCH_HOME)/dagster_home

.PHONY: install test lint typecheck unit demo ui lock clean images push-images lint-docker

$(BIN)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check robotoff_batch tests benchmarks containers
	$(BIN)/ruff format --check robotoff_batch tests benchmarks containers

typecheck: install
	$(BIN)/mypy robotoff_batch

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

demo: install
	$(BIN)/robotoff-batch demo

ui: install
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml

# Regenerate the lock file after changing dependencies in pyproject.toml (needs `pip install uv`).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(ROBOTOFF_BATCH_HOME)
