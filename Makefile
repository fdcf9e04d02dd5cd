# The colearn learner fleet. `make demo` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
EXTRAS ?= all,dev
PYTEST_ARGS ?=

# Containers (README, "Containers"). IMAGE_EXTRAS: which frameworks the learner image holds; WHEELHOUSE:
# a folder of wheels in the repository for an air-gapped build (`make wheelhouse` fills it).
DOCKER        ?= docker
COMPOSE       ?= docker compose
IMAGE_TAG     ?= 0.1.0
IMAGE_EXTRAS  ?= keras,torch
# IMAGE_FAMILIES: the model families the learner image serves (empty: every installed one).
IMAGE_FAMILIES ?=
BASE_IMAGE    ?= python:3.11.11-slim-bookworm
GPU_BASE_IMAGE ?= nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
LEARNER_IMAGE ?= colearn-learner:$(IMAGE_TAG)
LEARNER_GPU_IMAGE ?= colearn-learner-gpu:$(IMAGE_TAG)
BACKEND_IMAGE ?= colearn-backend:$(IMAGE_TAG)
WHEELHOUSE    ?=
LEARNERS      ?= 3
IMAGE_BUILD_ARGS = --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg WHEELHOUSE=$(WHEELHOUSE)

.PHONY: install proto lock test lint contract contract-release buf demo bench clean image image-gpu wheelhouse \
	compose-up compose-down test-e2e helm-lint test-helm test-k8s

# The wire contract's linter and breaking-change check: the npm package @bufbuild/buf, pinned, in tools/.
BUF_VERSION ?= 1.75.0
BUF_DIR      = tools/buf
BUF          = $(BUF_DIR)/node_modules/.bin/buf
RELEASED_CONTRACT = proto/released/colearn-v1.binpb

install: $(VENV)/.installed-$(EXTRAS)

# Reinstall whenever the dependency declarations change; one stamp per set of extras.
$(VENV)/.installed-%: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[$*]"
	touch $@

# Regenerates the committed stubs; tests/contract/test_generated_code_is_fresh.py fails when they are stale.
proto: install
	$(BIN)/python -m grpc_tools.protoc -Icolearn_contract/v1=proto/colearn/v1 \
		--python_out=proto --pyi_out=proto --grpc_python_out=proto colearn_contract/v1/learner.proto

lock: install
	{ head -3 requirements.lock; $(BIN)/pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

# ruff, then the layers' import contracts ([tool.importlinter] in pyproject.toml).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	COLUMNS=200 $(BIN)/lint-imports --no-cache

buf: $(BUF_DIR)/.installed-$(BUF_VERSION)

$(BUF_DIR)/.installed-$(BUF_VERSION):
	npm install --prefix $(BUF_DIR) --no-audit --no-fund --loglevel=error @bufbuild/buf@$(BUF_VERSION)
	$(BUF) --version
	touch $@

# buf lint with the STANDARD rules (exceptions, each with its reason, in proto/buf.yaml), and buf breaking
# against the contract as released: a change that would break a deployed peer fails here.
contract: buf
	$(BUF) lint proto
	$(BUF) breaking proto --against $(RELEASED_CONTRACT)

# Only when a new contract version is released: the image every later change is checked against.
contract-release: buf
	$(BUF) build proto --exclude-source-info -o $(RELEASED_CONTRACT)

test: lint contract
	COLEARN_REQUIRE_TOOLS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# The demo needs scikit-learn (its embedded DIGITS data) and the backend's console, not TensorFlow or torch.
DEMO_EXTRAS = sklearn,backend
demo:
	$(MAKE) install EXTRAS=$(DEMO_EXTRAS)
	$(BIN)/colearn-backend demo

bench: install
	$(BIN)/python benchmarks/run_all.py

# The learner image (IMAGE_EXTRAS) and the backend image (no ML library).
image:
	$(DOCKER) build -f learner_image/Dockerfile $(IMAGE_BUILD_ARGS) --build-arg EXTRAS=$(IMAGE_EXTRAS) \
		--build-arg FAMILIES=$(IMAGE_FAMILIES) -t $(LEARNER_IMAGE) .
	$(DOCKER) build -f learner_image/Dockerfile.backend $(IMAGE_BUILD_ARGS) -t $(BACKEND_IMAGE) .

image-gpu:
	$(DOCKER) build -f learner_image/Dockerfile.gpu --build-arg BASE_IMAGE=$(GPU_BASE_IMAGE) \
		--build-arg WHEELHOUSE=$(WHEELHOUSE) --build-arg EXTRAS=$(IMAGE_EXTRAS) \
		--build-arg FAMILIES=$(IMAGE_FAMILIES) -t $(LEARNER_GPU_IMAGE) .

# Every wheel the CPU images install, for `make image WHEELHOUSE=wheelhouse` on a machine without an index.
wheelhouse: install
	$(BIN)/python -m pip download -d wheelhouse -c requirements.lock ".[sklearn,backend,$(IMAGE_EXTRAS)]" \
		"setuptools>=77" wheel

# The fleet in the background (compose builds a missing image; `make image` rebuilds). Results land in
# runs/compose, written as you.
compose-up:
	mkdir -p runs/compose
	LEARNER_IMAGE=$(LEARNER_IMAGE) BACKEND_IMAGE=$(BACKEND_IMAGE) LEARNER_EXTRAS=$(IMAGE_EXTRAS) \
		BASE_IMAGE=$(BASE_IMAGE) WHEELHOUSE=$(WHEELHOUSE) FLEET_RESULTS=./runs/compose \
		FLEET_UID=$$(id -u) FLEET_GID=$$(id -g) $(COMPOSE) up --detach --scale learner=$(LEARNERS)

compose-down:
	$(COMPOSE) down --volumes --remove-orphans

# Images and the compose fleet on a private Docker engine (needs root, docker.io, docker-compose,
# debootstrap and prometheus: see .ci/run). Stops the engine it starts, even when a step fails.
test-e2e: install
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# The Helm chart (helm/colearn-fleet). Both fetch a pinned helm into tools/helm first (offline once cached).
# test-helm: lint --strict, kubernetes-validate --strict against k8s 1.30 and 1.37, then tests/helm.
helm-lint: install
	$(BIN)/python helm/fetch_helm.py
	$(BIN)/python helm/validate_chart.py --lint-only

test-helm: install
	$(BIN)/python helm/fetch_helm.py
	$(BIN)/python helm/validate_chart.py
	$(BIN)/python -m pytest tests/helm $(PYTEST_ARGS)

# tests/k8s: the chart installed on a real Kubernetes 1.36 control plane with fake nodes (../shared/k8s, or
# COLEARN_K8S_KIT; a $KUBECONFIG that reaches a server instead): validation, install, upgrade, drain, uninstall.
test-k8s: install
	$(BIN)/python helm/fetch_helm.py
	$(BIN)/python -m pytest tests/k8s $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis
