# The commands people type. Everything runs from a local .venv built from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
# `make bench BENCH_ARGS=--quick` for a smoke run; see `python -m bench.run --help`.
BENCH_ARGS ?= --update-docs

.PHONY: install run test test-fast lint fmt bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[worker,local,dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install qmill with its pinned dependencies

run: $(STAMP)  ## start the whole system in the foreground on 127.0.0.1:8000
	$(BIN)/qmill up

test: $(STAMP)  ## the whole suite: unit, integration (real servers) and end to end
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)  ## ruff, formatting and mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src/qmill worker/qmill_worker
	for f in functions/*/main.py; do $(BIN)/mypy "$$f" || exit 1; done

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[worker,local,dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## strategy table, end to end against `qmill up`, goals, chart (~13 min)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .qmill .pytest_cache .mypy_cache .ruff_cache
