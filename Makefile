# robotoff-batch: `make demo` runs the main job on embedded defaults, `make test` runs the checks.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export ROBOTOFF_BATCH_HOME ?= $(CURDIR)/.robotoff-batch
export DAGSTER_HOME ?= $(ROBOTOFF_BATCH_HOME)/dagster_home

.PHONY: install test lint typecheck unit suite demo ui lock clean image push-image lint-docker stop-db \
	bench-import
JOB ?= ingredients-spellcheck
# `make bench-import SIZE=100000`: the import benchmark (benchmarks/README.md); PREFILL_* size
# the Robotoff-sized tables (default 5M predictions, 2M insights), REPEAT the repetitions.
SIZE ?= 100000
PREFILL_PREDICTIONS ?= 5000000
PREFILL_INSIGHTS ?= 2000000
REPEAT ?= 3

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

# The fast tier: every test but those running a real `dagster dev` and the whole demo.
unit: install
	$(BIN)/pytest -q -m "not dagster_dev and not demo"

# The whole suite (what CI runs, through `make test`).
suite: install
	$(BIN)/pytest -q

test: lint typecheck suite

demo: install
	$(BIN)/robotoff-batch demo

# The UI and the daemon on http://127.0.0.1:$(PORT) (make ui PORT=3005).
PORT ?= 3000
ui: install
	$(BIN)/python -c "from robotoff_batch.cli.operations import dagster_home; dagster_home()"
	$(BIN)/dagster dev -w workspace.yaml -p $(PORT)

bench-import: install
	$(BIN)/python benchmarks/import_benchmark.py --sizes $(SIZE) --repeat $(REPEAT) \
		--prefill-predictions $(PREFILL_PREDICTIONS) --prefill-insights $(PREFILL_INSIGHTS)

# Regenerate the lock file after changing dependencies in pyproject.toml (needs `pip install uv`).
lock:
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock

# Container images (need a Docker engine: run these where one exists). The image URI is the
# job config's container_image_uri, so what is pushed is what the job runs.
image: install
	docker build -t "$$($(BIN)/robotoff-batch config image $(JOB))" containers/$(JOB)

push-image: image
	docker push "$$($(BIN)/robotoff-batch config image $(JOB))"

lint-docker: install
	$(BIN)/hadolint containers/*/Dockerfile

# The embedded PostgreSQL outlives the commands that start it (the CLI, the daemon share it).
stop-db: install
	$(BIN)/python -c "from robotoff_batch.paths import home_dir; from robotoff_batch.predictions.embedded import stop_embedded_postgres as s; s(home_dir() / 'postgres')"

clean: stop-db
	rm -rf $(ROBOTOFF_BATCH_HOME)
