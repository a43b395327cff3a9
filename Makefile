# The bundle's front door: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

ENV ?= local
APP_SERVER ?=
VENV ?= .venv
PYTHON ?= python3
# The controller venv is made for one Python: a host upgraded to another (Debian 12 -> 13:
# 3.11 -> 3.13) gets a new one.
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
# make vm RELEASE=trixie|bookworm: the Debian release of a new VM (default: the one an existing
# VM runs, else trixie, Debian 13).
RELEASE ?=
export LOCALVM_RELEASE := $(or $(RELEASE),$(LOCALVM_RELEASE))
export LOCALVM_NAME ?= flaskvm
export LOCALVM_SUBNET ?= 10.231.0.0/24
# make vm N=3: a lab of N VMs LAB1..LABN on one bridge br-LAB and subnet, beside the single VM;
# vm-stop/vm-destroy/vm-status N=... act on the lab (stop and destroy: all its VMs).
N ?=
LAB ?= $(or $(LOCALVM_LAB),lab)
LAB_SUBNET ?= $(or $(LOCALVM_LAB_SUBNET),10.231.2.0/24)
# Exported so that an inventory can name the lab's VMs.
export LOCALVM_LAB := $(LAB)
export LOCALVM_LAB_SUBNET := $(LAB_SUBNET)
# The end-to-end tests boot VMs of their own, beside any VM you work with: every test on
# Debian 13 (a VM, and a lab for the scale-out tests), and on Debian 12 (a VM) the tests marked
# every_release. tests/e2e/lanes.sh runs them in three lanes at once.
export E2E_VM_NAME ?= flasktest
export E2E_VM_SUBNET ?= 10.231.1.0/24
export E2E_RELEASE ?= trixie
export E2E_OTHER_RELEASE ?= bookworm
export E2E_OTHER_VM_NAME ?= e2e$(E2E_OTHER_RELEASE)
export E2E_OTHER_VM_SUBNET ?= 10.231.5.0/24
export E2E_LOG_DIR ?= /tmp/e2e-logs
# ...a VM for the user's own app, booted fresh for each app server (test_own_app.py)...
export E2E_APP_VM_NAME ?= e2eapp
export E2E_APP_VM_SUBNET ?= 10.231.6.0/24
# ...and a lab of their own for the scale-out tests (configs/lab).
export E2E_LAB ?= e2elab
export E2E_LAB_SUBNET ?= 10.231.4.0/24
# Local port of `make profiler`'s tunnel.
PROFILER_PORT ?= 8081
# Worker of `make pdb`, 1-based; POKE=1 sends requests to wake an idle one.
WORKER ?= 1
POKE ?=
# The inventory host of `make pdb` and `make profiler` (default: the first app host). Only
# that: `make loadtest`'s other target is URL=.
HOST ?=

BIN := $(VENV)/bin
LOCALVM := $(PYTHON) tools/localvm.py
LOCALVM_LAB_CMD := $(LOCALVM) --name $(LAB) --subnet $(LAB_SUBNET) lab
PLAYBOOK := ANSIBLE_CONFIG=ansible.cfg $(BIN)/ansible-playbook -i configs/$(ENV)
DEPLOY_VARS := $(if $(APP_SERVER),-e app_server=$(APP_SERVER)) $(ARGS)
# make loadtest / loadtest-ui (loadtests/README.md): a variable left empty keeps run.py's and
# locust.conf's default (the local VM over https, trusting configs/local's CA, scenario flow,
# 10 users, 30 s, one process). URL=https://... CA=FILE: another target and the CA to trust.
# LOADGEN=1: also locust workers on configs/$(ENV)'s loadgen hosts, LOADGEN_WORKERS=K each.
LOADGEN ?=
LOADGEN_WORKERS ?=
LOADTEST_OPTS := $(if $(URL),--host $(URL)) $(if $(CA),--ca-file $(CA)) $(if $(SCENARIO),--scenario $(SCENARIO)) \
	$(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION)) \
	$(if $(WORKERS),--workers $(WORKERS)) $(if $(TAGS),--tags $(TAGS)) \
	$(if $(LOADGEN),--loadgen $(ENV)) $(if $(LOADGEN_WORKERS),--loadgen-workers $(LOADGEN_WORKERS))

# make loadtest-open (loadtests/openload.py): the open-model gate, RATE arrivals/s of SCENARIO
# (flow or light) for DURATION, latencies from the scheduled time; URL= CA= as for loadtest.
RATE ?=
OPENLOAD_OPTS := $(if $(URL),--host $(URL)) $(if $(CA),--ca-file $(CA)) $(if $(RATE),--rate $(RATE)) \
	$(if $(DURATION),--duration $(DURATION)) $(if $(SCENARIO),--scenario $(SCENARIO))

.PHONY: help host-packages venv vm vm-stop vm-destroy vm-address vm-status ssh deploy demo tls-ca rollback warmup profiler pdb loadtest loadtest-ui loadtest-open bench bench-tls bench-profiler bench-warmup bench-captcha bench-streams lint reference unit e2e test clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z0-9-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "  Variables: ENV=local|vagrant|<config> APP_SERVER=uwsgi|gunicorn ARGS='-e var=value' CMD='...' KEEP_VM=1"
	@echo "  Load tests: URL=https://... CA=ca.crt DURATION=30s USERS=10 WORKERS=N SCENARIO=flow|negative|all TAGS=smoke,load"
	@echo "              LOADGEN=1 LOADGEN_WORKERS=K (workers on configs/ENV's loadgen hosts, e.g. ENV=lab)"
	@echo "  Open model: make loadtest-open RATE=20 DURATION=30s SCENARIO=flow|light (URL= CA= too)"
	@echo "  Several hosts: make vm N=3; make deploy ENV=lab; make pdb ENV=lab HOST=app2 WORKER=1"

host-packages: ## Install the Debian packages this machine needs, those missing only (as root)
	@tools/host-packages

venv: $(VENV)/.installed-py$(PYTHON_VERSION) ## Create the controller virtualenv (ansible, linters, pytest)

$(VENV)/.installed-py$(PYTHON_VERSION): requirements-dev.txt sample_app/pyproject.toml profiling/pyproject.toml
	@echo "==> Creating $(VENV) with the controller tools (Python $(PYTHON_VERSION))"
	@# A venv of another Python is made anew, not patched over.
	@if [ -d $(VENV) ] && [ ! -d $(VENV)/lib/python$(PYTHON_VERSION) ]; then \
		echo "    $(VENV) was made for another Python: replacing it"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	@touch $@

vm: ## Boot the local VM (RELEASE=trixie|bookworm), or with N=3 a lab of 3 VMs on one bridge (idempotent)
	@$(if $(N),$(LOCALVM_LAB_CMD) up --count $(N),$(LOCALVM) up)

vm-stop: ## Stop the local VM (N=3: every VM of the lab), keeping the disks
	@$(if $(N),$(LOCALVM_LAB_CMD) stop,$(LOCALVM) stop)

vm-destroy: ## Remove the local VM (N=3: every VM of the lab) and all it added to this host
	@$(if $(N),$(LOCALVM_LAB_CMD) destroy,$(LOCALVM) destroy)

vm-address: ## Print the local VM's IPv4 address (use with make -s)
	@$(LOCALVM) address

vm-status: ## Say whether the local VM runs (N=3: each VM of the lab; exit 0 only if all run)
	@$(if $(N),$(LOCALVM_LAB_CMD) status --count $(N),$(LOCALVM) status)

ssh: ## Open a shell in the local VM, or run CMD='...' there
	@# CMD reaches the VM as written: its raw value (make expands nothing in it), single-quoted
	@# for this shell, one argument; so $$, quotes, ; and | are the VM shell's.
	@$(LOCALVM) ssh $(if $(value CMD),-- '$(subst ','\'',$(value CMD))')

deploy: venv ## Deploy the stack (ENV=local, APP_SERVER=uwsgi|gunicorn)
	@test -d configs/$(ENV) || { echo "deploy: no configs/$(ENV) (try ENV=local, vagrant or a copy of configs/example)"; exit 2; }
	$(PLAYBOOK) deploy.yml $(DEPLOY_VARS)

demo: host-packages vm deploy ## Install what the host lacks, boot the VM, deploy, print the https URLs and the CA to trust
	@url=$$($(PYTHON) loadtests/target.py url) && ca=$$($(PYTHON) loadtests/target.py ca --env $(ENV)) || exit 1; \
	echo; echo "The app is up, over HTTPS (http:// redirects there):"; \
	echo "  page      $$url/"; \
	echo "  health    $$url/healthz"; \
	echo "  trust     $$ca  (this config's own CA: make -s tls-ca)"; \
	echo "            curl --cacert $$ca $$url/healthz"; \
	echo "            a browser: import it as an authority (Firefox: Settings, Certificates;"; \
	echo "            Chromium: chrome://certificate-manager) rather than click past its warning"; \
	echo "  shell     make ssh"; \
	echo "  logs      make ssh CMD='tail -f /var/log/supervisor/sample_app.log'"

tls-ca: ## Print the absolute path of the CA certificate of configs/ENV (local-ca) to trust (use with make -s)
	@$(PYTHON) loadtests/target.py ca --env $(ENV)

rollback: venv ## Go back to the release that served before, by a graceful reload (again: undo)
	$(PLAYBOOK) deploy.yml --tags rollback $(ARGS)

warmup: venv ## Warm every worker through /lazyinit and print their state (also run by deploy)
	$(PLAYBOOK) deploy.yml --tags warmup $(ARGS)

profiler: venv ## Open an SSH tunnel to the VM's /_profiler/ and print how to use it (HOST=app2: that app host)
	@$(BIN)/python tools/profiler_tunnel.py --env $(ENV) --port $(PROFILER_PORT) $(if $(HOST),--host $(HOST))

pdb: venv ## Open a pdb session in worker WORKER=N of the VM's app server, over SSH (HOST=app2, POKE=1 wakes an idle one)
	@$(BIN)/python tools/pdb_session.py --env $(ENV) --worker $(WORKER) $(if $(POKE),--poke) $(if $(HOST),--host $(HOST))

loadtest: venv ## Locust load test over https, headless, thresholds enforced (HOST= CA= DURATION= USERS= WORKERS=N SCENARIO= TAGS= LOADGEN=1)
	$(BIN)/python loadtests/run.py $(LOADTEST_OPTS)

loadtest-ui: venv ## Locust's web UI on http://127.0.0.1:8089 (the variables of loadtest)
	$(BIN)/python loadtests/run.py --ui $(LOADTEST_OPTS)

loadtest-open: venv ## Open-model latency gate: RATE=20 arrivals/s, DURATION=30s, SCENARIO=flow|light; p50..max from the schedule, thresholds enforced
	$(BIN)/python loadtests/openload.py $(OPENLOAD_OPTS)

bench: venv ## Benchmark: nginx+uWSGI vs nginx+gunicorn vs each server alone, then HTTPS vs HTTP (bench-tls), as ratios
	@command -v wrk >/dev/null || { echo "bench: needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python loadtests/bench/bench_servers.py
	$(BIN)/python loadtests/bench/bench_tls.py

bench-tls: venv ## Benchmark: captcha over HTTPS keep-alive vs plain HTTP per core, and full TLS handshakes/s
	@command -v openssl >/dev/null || { echo "bench-tls: needs openssl (apt-get install openssl)"; exit 1; }
	$(BIN)/python loadtests/bench/bench_tls.py

bench-profiler: venv ## Benchmark: the profiler's cost as ratios of the plain app, raw Dozer, disk after load
	@command -v wrk >/dev/null || { echo "bench-profiler: needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python loadtests/bench/bench_profiler.py

bench-warmup: venv ## Benchmark: warm-up time vs (N/K+1) x init, and a steady load's p99 during it vs before
	$(BIN)/python loadtests/bench/bench_warmup.py

bench-captcha: venv ## Benchmark: captcha images/s per core, library alone vs endpoint via nginx
	@command -v wrk >/dev/null || { echo "bench-captcha: needs wrk (apt-get install wrk)"; exit 1; }
	$(BIN)/python loadtests/bench/bench_captcha.py

bench-streams: venv ## Benchmark: p99 of /healthz and the captcha flow with 100 /events streams open vs none
	$(BIN)/python loadtests/bench/bench_streams.py

lint: venv ## ansible-lint (production profile), yamllint, ruff, vagrant validate
	$(BIN)/ansible-lint --nocolor
	$(BIN)/yamllint --strict .
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@command -v vagrant >/dev/null || { echo "lint: vagrant is missing (apt-get install vagrant) to validate the Vagrantfile"; exit 1; }
	VAGRANT_CHECKPOINT_DISABLE=1 vagrant validate

reference: venv ## Regenerate the references: roles/VARIABLES.md and profiling/README.md's WSGIPROBE_* table
	$(BIN)/python tools/varref.py
	$(BIN)/python tools/envref.py

unit: venv ## Unit tests (no VM)
	$(BIN)/pytest -q

e2e: venv ## End-to-end tests on VMs of their own (Debian 13 and 12, the lab, your own app), in three lanes (KEEP_VM=1 keeps them)
	@VENV=$(VENV) tests/e2e/lanes.sh

test: host-packages lint unit e2e ## Everything (what the host lacks first): lint, unit and end-to-end tests

clean: ## Remove the virtualenv and caches (not the VMs)
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
