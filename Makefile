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

.PHONY: install run test lint ui audit clean image image-push image-name

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

run: $(VENV)/.installed
	dvc repro
	@echo
	@echo "Metrics:  metrics/eval.json  (dvc metrics show)"
	@dvc metrics show
	@echo "Plots:    plots/  (dvc plots show  ->  dvc_plots/index.html)"
	@echo "Model:    reports/registration.json; MLflow store: mlflow.db + mlruns/"
	@echo "MLflow UI: make ui   then open http://127.0.0.1:$(UI_PORT)"

test: lint
	$(BIN)/python -m pytest

# Formatting is checked, never applied, in CI: run `ruff format .` before committing.
lint: $(VENV)/.dev-installed
	$(BIN)/ruff format --check --quiet .

ui: $(VENV)/.installed
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server \
	  --backend-store-uri sqlite:///mlflow.db --default-artifact-root ./mlruns \
	  --host 127.0.0.1 --port $(UI_PORT) --workers 1

# Known-vulnerability scan of the pinned requirements (pip-audit, PyPI advisory data), in its own
# venv so its dependencies never mix with the project's. Fails when a vulnerability is found.
audit:
	test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit==2.10.1)
	.venv-audit/bin/pip-audit --no-deps --disable-pip --progress-spinner off -r requirements.txt -r requirements-dev.txt

image:
	docker build -f docker/Dockerfile --build-arg VARIANT=$(VARIANT) -t $(IMAGE):$(TAG) .

image-push: image
	docker push $(IMAGE):$(TAG)

image-name:
	@echo $(IMAGE):$(TAG)

clean:
	rm -rf data/prepared models features metrics plots reports dvc_plots
