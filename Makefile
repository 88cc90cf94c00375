# Entry points for people and CI. Every target is cheap to re-run: bootstrap and the service
# script skip work that is already done.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.NOTPARALLEL:

BIN := .venv/bin

.PHONY: help venv services status certs lint test test-unit mutants demo drills stop clean

help:
	@echo "make demo       start the servers and fail over under load (RTO/RPO table, report)"
	@echo "make drills     every drill kind (three sites, the defaults), 20 unplanned failovers, one"
	@echo "                summary; the long drills"
	@echo "make test       lint + the suite (unit, integration, drills; not the long ones)"
	@echo "make test-unit  fast tests, no servers"
	@echo "make lint       ruff + mypy + import contracts (dependencies point inwards)"
	@echo "make mutants    mutation check of the safety-critical modules; prints survivors"
	@echo "                (MUTANT_MODULES=sync_gate,replicator,... to narrow it)"
	@echo "make venv       create/update .venv and install missing Debian packages"
	@echo "make services   start PostgreSQL, ZooKeeper, Kafka (tansu); make status / make stop"
	@echo "make certs      a development CA and region certificates for the peer link (var/certs)"
	@echo "make clean      stop our servers and remove var/"

venv:
	@scripts/bootstrap.sh

services: venv
	@scripts/services.sh start

status:
	@scripts/services.sh status

certs:
	@scripts/certs.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy domain application infra projections
	$(BIN)/lint-imports

test: venv services lint
	$(BIN)/pytest -q -m "not long" tests

test-unit: venv
	$(BIN)/pytest -q tests/unit

mutants: venv
	BIN=$(BIN) scripts/mutants.sh

demo: venv services
	$(BIN)/exchange-dr demo

drills: venv services
	$(BIN)/exchange-dr drills --schedule weekly
	EXDR_LONG_TESTS=1 $(BIN)/pytest -q -m long tests

stop:
	@scripts/services.sh stop

clean: stop
	rm -rf var
