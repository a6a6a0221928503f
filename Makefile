# Two commands do everything on a fresh machine:
#   make run    create .venv, install, run the whole pipeline (dvc repro) on the digits dataset
#   make test   create .venv, install with test tools, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
UI_PORT ?= 5000
# The component image. `make image` builds IMAGE:TAG, which is also the tag the compiled pipeline
# uses by default (aepipe.kfp_support.default_image: aepipe:<version>-cuda; tests/test_docker.py
# checks they agree). VARIANT=cpu builds the CPU-only variant.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
VARIANT ?= cuda
IMAGE   ?= aepipe
TAG     ?= $(VERSION)-$(VARIANT)
# The Dockerfile's base image; `make base-image` builds a Debian stand-in under this name where
# Docker Hub cannot be reached. WHEELHOUSE: a --find-links URL pip installs from instead of PyPI.
PYTHON_IMAGE    ?= python:3.11-slim-bookworm
WHEELHOUSE      ?=
WHEELHOUSE_DIR  ?= build/wheelhouse
WHEELHOUSE_PORT ?= 38765
# A private Docker engine (docker/engine.sh): its socket, data and state all live under DOCKER_DIR.
DOCKER_DIR      ?= /tmp/aepipe-docker

.PHONY: install run test lint ui audit clean image image-push image-name base-image base-image-if-needed \
	docker-install docker-start docker-stop wheelhouse image-ci

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Ends with `aepipe summary`: test accuracy and macro-F1, the registered model, the next commands.
run: $(VENV)/.installed
	dvc repro
	@echo
	@aepipe summary

# Two workers, one test file each (module fixtures such as a whole pipeline run are built once per
# file); TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Formatting is checked, never applied, in CI: run `ruff format .` before committing. Then the
# linter (rules in pyproject [tool.ruff.lint]) and mypy --strict on src/aepipe ([tool.mypy]).
lint: $(VENV)/.dev-installed
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .
	$(BIN)/python -m mypy

# The MLflow UI over the store the stages write without MLFLOW_TRACKING_URI: UI_DIR/mlflow.db
# (UI_DIR: the project folder, this one by default).
UI_DIR ?= .
ui: $(VENV)/.installed
	cd $(UI_DIR) && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(CURDIR)/$(BIN)/mlflow server \
	  --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns \
	  --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Known-vulnerability scan of the pinned requirements (pip-audit, PyPI advisory data), in its own
# venv so its dependencies never mix with the project's. Fails when a vulnerability is found.
audit:
	test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit==2.10.1)
	.venv-audit/bin/pip-audit --no-deps --disable-pip --progress-spinner off -r requirements.txt -r requirements-dev.txt

# --network host: pip reaches PyPI (or the wheelhouse on 127.0.0.1) from an engine without a bridge.
# GIT_COMMIT/GIT_DIRTY: the checkout's commit, baked into the image for lineage (no .git inside).
image:
	DOCKER_BUILDKIT=0 docker build --network host -f docker/Dockerfile --build-arg VARIANT=$(VARIANT) \
	  --build-arg PYTHON_IMAGE=$(PYTHON_IMAGE) --build-arg WHEELHOUSE=$(WHEELHOUSE) \
	  --build-arg GIT_COMMIT="$$(git rev-parse HEAD 2>/dev/null)" \
	  --build-arg GIT_DIRTY="$$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo true || echo false)" \
	  -t $(IMAGE):$(TAG) .

image-push: image
	docker push $(IMAGE):$(TAG)

image-name:
	@echo $(IMAGE):$(TAG)

# The Dockerfile's base image built from Debian packages (mmdebstrap), tagged $(PYTHON_IMAGE): for
# hosts that cannot pull from Docker Hub. base-image-if-needed keeps a present or pullable one.
base-image:
	docker/base-image.sh $(PYTHON_IMAGE)

base-image-if-needed:
	docker/base-image.sh --if-needed $(PYTHON_IMAGE)

# Debian's Docker engine and mmdebstrap (root; package registries only).
docker-install:
	command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null)

# Start/stop the private engine; then `export DOCKER_HOST=unix://$(DOCKER_DIR)/docker.sock`.
docker-start:
	docker/engine.sh start $(DOCKER_DIR)

docker-stop:
	docker/engine.sh stop $(DOCKER_DIR)

# The wheels of requirements.txt as the host's pip resolves them (its cache and mirrors first), plus
# what building the package needs: the image then installs from them and downloads nothing twice.
wheelhouse: $(VENV)/.installed
	$(BIN)/pip wheel --quiet -r requirements.txt "setuptools>=68" wheel -w $(WHEELHOUSE_DIR)

# What CI runs (.ci/run): the engine's packages, the base image when it cannot be pulled, the image
# from the wheelhouse, and the smoke check `docker run IMAGE` (validates the baked-in params).
# DOCKER_HOST must point at a running engine (make docker-start).
image-ci: docker-install base-image-if-needed wheelhouse
	docker/serve-wheelhouse.sh $(WHEELHOUSE_DIR) $(WHEELHOUSE_PORT) -- \
	  $(MAKE) --no-print-directory image WHEELHOUSE=http://127.0.0.1:$(WHEELHOUSE_PORT)/
	docker run --rm $(IMAGE):$(TAG) >/dev/null
	@echo "image $(IMAGE):$(TAG): $$(docker image inspect -f '{{.Size}}' $(IMAGE):$(TAG) | awk '{printf "%.2f GB", $$1/1e9}'), params smoke check passed"

clean:
	rm -rf data/prepared models features metrics plots reports dvc_plots
