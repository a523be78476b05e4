# STEDI balance-risk pipeline. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MVN := mvn -q -B -Dstyle.color=never -f jvm/pom.xml
SPARK_JARS := build/jars/spark/.stamp
KAFKA_JARS := build/jars/kafka/.stamp
VENV_STAMP := $(VENV)/.stamp
SYSTEM_STAMP := build/.system-deps
NODE_STAMP := node_modules/.stamp
COMPOSECHECK := build/bin/composecheck

.PHONY: help install run up down status clean test unit lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

install: $(SYSTEM_STAMP) $(VENV_STAMP) $(SPARK_JARS) $(KAFKA_JARS) $(NODE_STAMP) $(COMPOSECHECK) ## install everything (idempotent)

$(SYSTEM_STAMP): bin/system-deps
	@bin/system-deps
	@mkdir -p build && touch $@

$(VENV_STAMP): pyproject.toml
	@echo ">> Python environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[spark,test,dev]'
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo ">> browser assets (npm) into node_modules"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(COMPOSECHECK): tools/composecheck/main.go tools/composecheck/go.mod tools/composecheck/go.sum
	@echo ">> compose-go validator (Go module proxy) into $@"
	@cd tools/composecheck && go build -o $(CURDIR)/$@ .

$(SPARK_JARS): jvm/pom.xml
	@echo ">> Spark's Kafka connector (Maven) into build/jars/spark"
	@rm -rf build/jars/spark
	@$(MVN) -P spark dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/build/jars/spark
	@touch $@

$(KAFKA_JARS): jvm/pom.xml
	@echo ">> Apache Kafka broker (Maven) into build/jars/kafka"
	@rm -rf build/jars/kafka
	@$(MVN) -P kafka dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(CURDIR)/build/jars/kafka
	@touch $@

test: install ## run every test (unit, integration on a real Kafka and Redis)
	@$(PY) -m pytest

unit: install ## run the unit tests only (static micro-batches, no services)
	@$(PY) -m pytest tests/unit

lint: install ## ruff
	@$(VENV)/bin/ruff check .

up: install ## start Kafka, Redis and the Redis source in the background (returns once they answer)
	@$(PY) -m stedi.stack up

down: ## stop what `make up` started (data is kept)
	@if [ -x $(PY) ]; then $(PY) -m stedi.stack down; fi

status: ## show the local stack's processes and logs
	@$(PY) -m stedi.stack status

clean: down ## stop the stack and delete its data and the checkpoints
	@rm -rf build/stack build/checkpoints
	@echo "   removed build/stack and build/checkpoints"

run: install ## run the whole pipeline in the foreground (Ctrl-C stops what it started)
	@$(PY) -m stedi.stack run

bench: install ## the join vs the course approach and Kafka: table + build/bench/results.json (BENCH_EVENTS=200000)
	@$(PY) -m bench.run
