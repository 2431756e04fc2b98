# jobdeck: `make run` serves on 127.0.0.1:8000 (SQLite), `make test` runs every test.
# Both install everything into .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format clean bench-latency soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,postgres]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install jobdeck with its test tools

run: $(STAMP) ## serve the API with an embedded worker on 127.0.0.1:8000 (./jobdeck.db)
	$(BIN)/jobdeck serve

test: $(STAMP) ## lint, then run the whole test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP) ## format the code
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .venv-peers .pytest_cache .ruff_cache .hypothesis src/*.egg-info

bench-latency: $(STAMP) ## pickup and cancel latency on SQLite and PostgreSQL (a few minutes)
	$(BIN)/python bench/latency.py

soak: $(STAMP) ## 2,000 jobs per backend, workers SIGKILLed, DB stalls (~5 min; bench/results/soak.json)
	JOBDECK_SOAK_JOBS=2000 JOBDECK_SOAK_RESULTS=bench/results/soak.json \
		$(BIN)/python -m pytest tests/faults/test_soak.py -k 'soak_with_workers' -v
