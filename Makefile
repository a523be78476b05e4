# STEDI balance-risk pipeline. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian's Maven prints terminal resets around its output; jansi.noreset stops them.
MVN := MAVEN_OPTS="$(MAVEN_OPTS) -Djansi.noreset=true" mvn -q -B -Dstyle.color=never -f jvm/pom.xml
JARS := build/jars
SPARK_JARS := $(JARS)/spark/.stamp
KAFKA_JARS := $(JARS)/kafka/.stamp
VENV_RUN := $(VENV)/.stamp-run
VENV_TEST := $(VENV)/.stamp-test
SYSTEM_RUN := build/.system-deps-run
SYSTEM_TEST := build/.system-deps-test
NODE_STAMP := node_modules/.stamp
COMPOSECHECK := build/bin/composecheck
CLASS_ARCHIVE := $(shell bin/class-archive path)
DRIVER_JAR := $(shell bin/driver-jar path)

.PHONY: help install install-test run up down status clean test unit lint bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# What running needs (make run, make up, the submit wrappers): no test tool.
install: $(SYSTEM_RUN) $(VENV_RUN) $(SPARK_JARS) $(KAFKA_JARS) $(NODE_STAMP) $(DRIVER_JAR) $(CLASS_ARCHIVE) ## install what running needs (idempotent)

# What the tests need on top: Chromium, the Compose validator (Go), hadolint, pytest.
install-test: install $(SYSTEM_TEST) $(VENV_TEST) $(COMPOSECHECK) ## install the test tools too (idempotent)

$(SYSTEM_RUN): bin/system-deps
	@bin/system-deps run
	@mkdir -p build && touch $@

$(SYSTEM_TEST): bin/system-deps
	@bin/system-deps test
	@mkdir -p build && touch $@

$(VENV_RUN): pyproject.toml
	@echo ">> Python environment in $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[spark,bench]'
	@touch $@

$(VENV_TEST): pyproject.toml $(VENV_RUN)
	@echo ">> test tools into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[spark,bench,test,dev]'
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	@echo ">> browser assets (npm) into node_modules"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(COMPOSECHECK): tools/composecheck/main.go tools/composecheck/go.mod tools/composecheck/go.sum
	@echo ">> compose-go validator (Go module proxy) into $@"
	@cd tools/composecheck && go build -o $(CURDIR)/$@ .

$(SPARK_JARS): jvm/pom.xml
	@echo ">> Spark's Kafka connector (Maven) into $(JARS)/spark"
	@rm -rf $(JARS)/spark
	@$(MVN) -P spark dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath $(JARS)/spark)
	@touch $@

$(KAFKA_JARS): jvm/pom.xml
	@echo ">> Apache Kafka broker (Maven) into $(JARS)/kafka"
	@rm -rf $(JARS)/kafka
	@$(MVN) -P kafka dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=$(abspath $(JARS)/kafka)
	@touch $@

# The drivers' jar: progress lines, checkpoint files without forks (bin/driver-jar).
$(DRIVER_JAR): $(VENV_RUN) $(wildcard jvm/driver/*.xml jvm/driver/io/stedi/*/*.java) bin/driver-jar
	@echo ">> the drivers' jar (javac) into $(@D)"
	@bin/driver-jar build

# Spark's classes, parsed and verified once, for every later JVM start (bin/class-archive):
# the JVM writes them as a short run of the jobs' own transformations exits.
$(CLASS_ARCHIVE): $(VENV_RUN) $(SPARK_JARS) $(DRIVER_JAR) stedi/stack/class_archive.py
	@echo ">> Spark's class data archive (quicker JVM starts) into $(@D)"
	@mkdir -p $(@D) && rm -f $@ $@.tmp
	@SPARK_SUBMIT_OPTS="$$(bin/class-archive dump)" bin/submit stedi/stack/class_archive.py \
		> $(@D)/workload.log 2>&1 || { tail -n 30 $(@D)/workload.log; exit 1; }
	@mv $@.tmp $@

# The unit tier runs once, inside tests/integration/test_unit_tier.py: `make unit` in a bare
# checkout without the test tools, beside the integration tier; its summary ends the output.
test: install-test ## run every test (unit, integration on a real Kafka and Redis, browser)
	@$(PY) -m pytest -m "not unit"

# The quick loop: Java (in-process Spark, bin/driver-jar) and the Python environment with pytest; no
# services, no spark-submit, no Go, Chromium or Maven jars (tests/unit/test_install.py).
unit: $(SYSTEM_RUN) $(VENV_TEST) $(DRIVER_JAR) ## run the unit tests only (in-process Spark, no services)
	@$(PY) -m pytest -m unit

lint: install-test ## ruff
	@$(VENV)/bin/ruff check .

up: install ## start Kafka, Redis and the Redis source in the background (returns once they answer)
	@$(PY) -m stedi.stack up

down: ## stop everything this checkout's stack started (data is kept)
	@if [ -x $(PY) ]; then $(PY) -m stedi.stack down; fi

status: ## show the local stack's processes and logs
	@$(PY) -m stedi.stack status

clean: down ## stop the stack and delete its data and the checkpoints
	@rm -rf build/stack build/checkpoints
	@echo "   removed build/stack and build/checkpoints"

run: install ## run the whole pipeline in the foreground (Ctrl-C stops what it started)
	@$(PY) -m stedi.stack run

bench: install ## make run at a trickle, the join vs the course approach and Kafka, the risk scores: table + results.json
	@$(PY) -m bench.run
