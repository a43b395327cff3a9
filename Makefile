# The bundle's front door: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV ?= local
APP_SERVER ?=
VENV ?= .venv
PYTHON ?= python3
export LOCALVM_NAME ?= flaskvm
export LOCALVM_SUBNET ?= 10.231.0.0/24
# The end-to-end tests boot a VM of their own, beside any VM you work with.
E2E_VM_NAME ?= flasktest
E2E_VM_SUBNET ?= 10.231.1.0/24
# Local port of `make profiler`'s tunnel.
PROFILER_PORT ?= 8081

BIN := $(VENV)/bin
LOCALVM := $(PYTHON) tools/localvm.py
PLAYBOOK := ANSIBLE_CONFIG=ansible.cfg $(BIN)/ansible-playbook -i configs/$(ENV)
DEPLOY_VARS := $(if $(APP_SERVER),-e app_server=$(APP_SERVER)) $(ARGS)

.PHONY: help venv vm vm-stop vm-destroy vm-address vm-status ssh deploy demo warmup profiler bench-profiler bench-captcha lint unit e2e test clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Variables: ENV=local|vagrant|<config> APP_SERVER=uwsgi|gunicorn ARGS='-e var=value' CMD='...' KEEP_VM=1"

venv: $(VENV)/.installed ## Create the controller virtualenv (ansible, linters, pytest)

$(VENV)/.installed: requirements-dev.txt sample_app/pyproject.toml profiling/pyproject.toml
	@echo "==> Creating $(VENV) with the controller tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

vm: ## Boot the local VM (idempotent: reuses a running one)
	@$(LOCALVM) up

vm-stop: ## Stop the local VM, keeping its disk
	@$(LOCALVM) stop

vm-destroy: ## Remove the local VM and everything it added to this host
	@$(LOCALVM) destroy

vm-address: ## Print the local VM's IPv4 address (use with make -s)
	@$(LOCALVM) address

vm-status: ## Say whether the local VM runs
	@$(LOCALVM) status

ssh: ## Open a shell in the local VM, or run CMD='...' there
	@# CMD travels as one argument (from the environment), so ; and | run on the VM, not here.
	@$(LOCALVM) ssh $(if $(CMD),-- "$$CMD")

deploy: venv ## Deploy the stack (ENV=local, APP_SERVER=uwsgi|gunicorn)
	@test -d configs/$(ENV) || { echo "deploy: no configs/$(ENV) (try ENV=local, vagrant or a copy of configs/example)"; exit 2; }
	$(PLAYBOOK) deploy.yml $(DEPLOY_VARS)

demo: vm deploy ## Boot the VM, deploy, and print the URLs to open
	@addr=$$($(LOCALVM) address); \
	echo; echo "The app is up:"; \
	echo "  page      http://$$addr/"; \
	echo "  health    http://$$addr/healthz"; \
	echo "  shell     make ssh"; \
	echo "  logs      make ssh CMD='tail -f /var/log/supervisor/sample_app.log'"

warmup: venv ## Warm every worker through /lazyinit and print their state (also run by deploy)
	$(PLAYBOOK) warmup.yml $(ARGS)

profiler: venv ## Open an SSH tunnel to the VM's /_profiler/ and print how to use it
	@$(BIN)/python tools/profiler_tunnel.py --env $(ENV) --port $(PROFILER_PORT)

bench-profiler: venv ## Benchmark: the profiler's cost as ratios of the plain app, raw Dozer, disk after load
	@command -v wrk >/dev/null || { echo "bench-profiler: needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python loadtests/bench_profiler.py

bench-captcha: venv ## Benchmark: captcha images/s per core, library alone vs endpoint via nginx
	@command -v wrk >/dev/null || { echo "bench-captcha: needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python loadtests/bench_captcha.py

lint: venv ## ansible-lint (production profile), yamllint, ruff, vagrant validate
	$(BIN)/ansible-lint --nocolor
	$(BIN)/yamllint --strict .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@command -v vagrant >/dev/null || { echo "lint: vagrant is missing (apt-get install vagrant) to validate the Vagrantfile"; exit 1; }
	VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate

unit: venv ## Unit tests (no VM)
	$(BIN)/pytest -q sample_app/tests profiling/tests tests/unit

e2e: venv ## End-to-end tests on a VM of their own (KEEP_VM=1 keeps it)
	LOCALVM_NAME=$(E2E_VM_NAME) LOCALVM_SUBNET=$(E2E_VM_SUBNET) $(BIN)/pytest -v -rs tests/e2e

test: lint unit e2e ## Everything: lint, unit and end-to-end tests

clean: ## Remove the virtualenv and caches (not the VMs)
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
