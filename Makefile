# Everything a user needs: `make run` serves the default model, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STORE  ?= artifacts
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: run test lint layers typecheck container-check pytest image-test train bench fmt clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamps re-install when pyproject.toml changes. setuptools' note that an editable install
# prefers same-named folders in the working directory is informational (ours are the package).
EDITABLE_QUIET := PYTHONWARNINGS="ignore:Editable installation.:UserWarning"

$(VENV)/.runtime: pyproject.toml | $(PY)
	$(EDITABLE_QUIET) $(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(PY)
	$(EDITABLE_QUIET) $(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime

## run: install, train the default model from the bundled digits data if the store is empty, serve
run: $(VENV)/.runtime
	$(PY) -m model.train builtin:digits --store $(STORE) --name digits --if-store-empty
	@echo "softmax-serve on http://$(HOST):$(PORT)  (API docs: http://$(HOST):$(PORT)/docs)"
	$(PY) -m service --host $(HOST) --port $(PORT) --store $(STORE)

## train: train a new digits version into the store
train: $(VENV)/.runtime
	$(PY) -m model.train builtin:digits --store $(STORE) --name digits

## test: lint, format check, layer contracts, types, container checks, the whole pytest suite
test: lint layers typecheck container-check pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

layers: $(VENV)/.dev
	$(BIN)/lint-imports

typecheck: $(VENV)/.dev
	$(BIN)/mypy

container-check: $(VENV)/.dev
	$(BIN)/hadolint Dockerfile && echo "hadolint: Dockerfile has no findings"
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@if docker compose version >/dev/null 2>&1; then \
		docker compose --profile train --profile scale --profile postgres config --quiet \
		&& echo "docker compose config: docker-compose.yml resolves with every profile"; \
	else echo "docker compose config: skipped, no Compose v2 here (the schema check above ran)"; fi
	$(BIN)/kubernetes-validate --strict --kubernetes-version 1.31.0 deploy/kubernetes/*.yaml

pytest: $(VENV)/.dev
	$(BIN)/pytest

## image-test: build the image with podman and run it for real (also part of pytest above,
## which skips it, saying why, where podman is missing; here that is an error)
image-test: $(VENV)/.dev
	IMAGE_TEST_REQUIRED=1 $(BIN)/pytest -m image tests/integration/test_image.py

## bench: benchmarks (never part of make test)
bench: $(VENV)/.dev
	$(PY) bench/bench_training.py

fmt: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
