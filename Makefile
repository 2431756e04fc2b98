# jobdeck: `make run` serves on 127.0.0.1:8000 (SQLite), `make test` runs every test.
# Both install everything into .venv first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# matplotlib (the `bench` extra) draws the chart of `make bench`; only the benchmarks need it.
BENCH_STAMP := $(VENV)/.bench-installed
# The peer queues of `make bench-peers` live in a virtual environment of their own.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint format clean bench bench-latency bench-peers soak

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

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,postgres,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## jobdeck's benchmarks on both backends, then docs/benchmarks.md (~10 min; needs wrk)
	$(BIN)/python bench/run.py $(ARGS); status=$$?; $(BIN)/python bench/report.py && exit $$status

bench-latency: $(STAMP) ## pickup and cancel latency on SQLite and PostgreSQL (a few minutes)
	$(BIN)/python bench/latency.py

soak: $(STAMP) ## 2,000 jobs per backend, workers SIGKILLed, DB stalls (~5 min; bench/results/soak.json)
	JOBDECK_SOAK_JOBS=2000 JOBDECK_SOAK_RESULTS=bench/results/soak.json \
		$(BIN)/python -m pytest tests/faults/test_soak.py -k 'soak_with_workers' -v

$(PEERS_STAMP): bench/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet -r bench/peers/requirements.txt
	touch $(PEERS_STAMP)

# The peers, then jobdeck's enqueue, drain and pickup in the same run, so that the ratios in
# docs/benchmarks.md compare figures taken minutes apart on the same machine.
bench-peers: $(PEERS_STAMP) $(BENCH_STAMP) ## peer queues on local Redis/PostgreSQL beside jobdeck (~20 min; ARGS=--only huey)
	$(PEERS_VENV)/bin/python bench/peers/run.py $(ARGS)
	$(BIN)/python bench/run.py --only enqueue,drain,latency
	$(BIN)/python bench/report.py
