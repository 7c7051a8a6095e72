# payevents — the two commands a new machine needs: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.stamp-run
TEST_STAMP := $(VENV)/.stamp-test
DEMO_ARGS ?=
PYTEST_ARGS ?= --durations=30

.PHONY: install demo test lint typecheck system-deps postgres kafka-libs kafka asyncapi-deps bench clean bytecode

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml $(RUN_STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

install: $(RUN_STAMP) bytecode

## The package's modules byte-compiled, as a wheel's install does (an editable install otherwise compiles them in
## every process it starts when PYTHONDONTWRITEBYTECODE is set: ~57 ms of a worker's start); only stale ones again.
bytecode: $(RUN_STAMP)
	@$(BIN)/python -m compileall -q src >/dev/null

## The main job on the embedded default: relay + four services + a realistic mix of payments.
demo: $(RUN_STAMP) bytecode
	$(BIN)/payevents demo --env dev --data-dir demo-data $(DEMO_ARGS)

## Debian packages the tests use (Chromium for the browser tests), installed where missing.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { echo "chromium could not be installed" >&2; exit 1; }

## PostgreSQL for the tests: installs Debian's postgresql where missing, starts it, opens the database `test` on 127.0.0.1:5432.
postgres:
	@bash tools/postgres-up.sh

## The pinned Apache Kafka's jars (tools/kafka/pom.xml), fetched once by Maven into ~/.cache/payevents.
kafka-libs:
	@bash tools/kafka/fetch.sh >/dev/null

## A local Apache Kafka on 127.0.0.1:9092 until Ctrl-C (data kept in kafka-data/).
kafka: $(RUN_STAMP) kafka-libs
	$(BIN)/payevents kafka up

## The AsyncAPI validator the tests use (@asyncapi/parser, pinned in tools/asyncapi/package-lock.json).
ASYNCAPI_STAMP := tools/asyncapi/node_modules/.stamp
$(ASYNCAPI_STAMP): tools/asyncapi/package.json tools/asyncapi/package-lock.json
	@command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd tools/asyncapi && npm ci --no-audit --no-fund --loglevel=error
	touch $@

asyncapi-deps: $(ASYNCAPI_STAMP)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests examples conftest.py

typecheck: $(TEST_STAMP)
	$(BIN)/mypy src/payevents

## The whole suite: lint, then every test (Apache Kafka started by the fixtures, PostgreSQL, Chromium).
test: $(TEST_STAMP) bytecode system-deps postgres kafka-libs asyncapi-deps lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

## Every benchmark suite, on both transports; prints a table, writes bench-results.json and a PNG.
bench: $(TEST_STAMP) bytecode
	$(BIN)/payevents bench all --env dev

## Seeded runs of the platform with hostile records while workers are killed; every invariant checked per run.
SOAK_ARGS ?= --runs 5 --payments 1000
.PHONY: soak
soak: $(RUN_STAMP) bytecode
	$(BIN)/payevents soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) demo-data payevents-data kafka-data .pytest_cache bench-results.json bench-results.png
