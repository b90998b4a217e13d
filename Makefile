# Two commands for a new user: `make demo` (the main job) and `make test` (the tests).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install infra infra-stop tools test test-unit lint docs demo demo-clean bench-core bench-population bench-stream bench-ceiling bench-api clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

infra:
	deploy/local/kafka.sh start
	deploy/local/redis.sh start

infra-stop:
	-deploy/local/kafka.sh stop
	-deploy/local/redis.sh stop

tools:
	@if [ -x deploy/local/install-tools.sh ]; then deploy/local/install-tools.sh; fi

test: install infra tools
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

docs: install
	$(BIN)/python -m app.reference

demo: install infra
	deploy/local/demo.sh

# stop kept demo runs (DEMO_KEEP=1), delete every demo run's topics, Redis keys and data
demo-clean: install
	deploy/local/demo.sh clean

bench-core: install
	$(BIN)/python bench/bench_core.py

bench-population: install
	$(BIN)/python bench/bench_population.py

bench-stream: install infra
	$(BIN)/python bench/bench_stream.py

bench-ceiling: install infra
	$(BIN)/python bench/bench_faust_ceiling.py

bench-api: install
	deploy/local/redis.sh start
	deploy/local/install-tools.sh --wrk-only
	$(BIN)/python bench/bench_api.py
	$(BIN)/python bench/bench_api.py --cache 0

clean: infra-stop
	rm -rf .local
