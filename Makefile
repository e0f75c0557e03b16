# The platform's everyday commands. Every target installs what it needs first (idempotent).
SHELL := /bin/bash
PY := .venv/bin/python
MPP := $(PY) -m mpp.cli
# This checkout's code first. The environment is shared by every clone with the same uv.lock
# (~/.cache/mpp/venvs), and its editable install points at whichever clone last ran
# scripts/bootstrap.sh; without this, two clones at work at once would run each other's code.
empty :=
space := $(empty) $(empty)
export PYTHONPATH := $(subst $(space),:,$(CURDIR)/lib $(patsubst %/,%,$(wildcard $(CURDIR)/services/*/)))

.PHONY: help venv demo up down status airflow airflow-down test unit lint typecheck proto proto-check clean-stack \
	cluster cluster-down images deploy deploy-down

help:  ## List the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

venv:  ## Create or reuse the cached virtual environment (.venv)
	@bash scripts/bootstrap.sh

demo: venv  ## The main job on local defaults: stack up, catalog, replay samples, report
	@$(MPP) demo

up: venv  ## Start the local stack (real servers on loopback), reusing what runs
	@$(MPP) stack up

down: venv  ## Stop the services and servers that `make demo`/`make up` started, nothing else
	@$(MPP) airflow down
	@$(MPP) services down
	@$(MPP) stack down --with observability

status: venv  ## Probe every server of the stack and every service
	@$(MPP) stack status; $(MPP) services status

airflow: venv  ## Start the local Airflow 3 (UI and REST API on 127.0.0.1:18280), reusing what runs
	@$(MPP) airflow up

airflow-down: venv  ## Stop the Airflow processes that `make airflow` started, nothing else
	@$(MPP) airflow down

test: venv  ## Lint, type-check, start the stack, run every test
	@bash scripts/test.sh

unit: venv  ## Unit tests only (no servers)
	@$(PY) -m pytest tests/unit -q

lint: venv  ## ruff
	@$(PY) -m ruff check lib services tests bench jobs dags
	@$(PY) -m ruff format --check lib services tests bench jobs dags

typecheck: venv  ## mypy --strict on the library and services
	@$(PY) -m mypy

proto: venv  ## Regenerate lib/mpp/v1 from proto/
	@bash scripts/gen_proto.sh

clean-stack: down  ## Stop the stack and delete its data (.stack/)
	rm -rf .stack

cluster: venv  ## Start the local single-node Kubernetes cluster (root; first build ~15 min)
	@$(MPP) cluster up

cluster-down: venv  ## Stop the local cluster and remove its network setup, mounts and pods
	@$(MPP) cluster down

images: venv  ## Build the six services' images with buildah and load them into the local cluster
	@$(MPP) images build --import

deploy: cluster  ## Install the Helm chart on the local cluster against the local stack (images built first)
	@$(MPP) deploy up

deploy-down: venv  ## Uninstall the chart from the local cluster
	@$(MPP) deploy down
