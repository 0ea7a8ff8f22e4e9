"""Write RELIABILITY.md from what ``make reliability`` observed: one table of every fault, load and security case.

    python bench/reliability_report.py [--results bench/results/reliability] [--out RELIABILITY.md]
                                       [--pytest-command "..."]

Reads, under ``--results``: ``junit.xml`` (pytest's outcome and time of every test it ran), the ``*.json`` figures
the tests in ``tests/reliability`` write when ``PRESCORE_RELIABILITY_OUT`` is set, ``soak.json`` (``bench/soak.py``)
and ``audit.json`` (``.ci/audit.py --summary``). A case whose test did not run (deselected, skipped: e.g. no
PostgreSQL) says so. Exit code 1 when a case failed or is missing, 0 otherwise (the file is written either way).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
Figures = dict[str, Any]
FULL_SOAK_S = 300  # SOAK_SECONDS of `make reliability`


@dataclass(frozen=True)
class Case:
    """One row: the fault or load, the test that exercises it, and how to render what it observed."""

    fault: str
    test: str  # pytest node id
    claim: str  # what the test asserts, shown after its outcome
    figures: str | None = None  # name of the JSON figures file the test writes (tests/reliability only)
    render: Callable[[Figures], str] | None = None


def _loader_kill(f: Figures) -> str:
    return (f"half-visible reads **{f['half_visible_reads']}/{f['reads']}** get_many calls ({f['entities_per_read']} "
            f"ids each, {f['reads_during_load']} while loading); killed at {f['rows_loaded_at_kill']:,} rows; current "
            f"run still `{f['current_run_after']}`; cleanup removed the orphan's {f['keys_removed_by_cleanup']:,} "
            f"bucket keys (of {f['orphan_bucket_keys']:,})")  # fmt: skip


def _api_restart(f: Figures) -> str:
    return (f"5xx **{f['status_5xx']}/{f['requests']}**, failed requests {f['failed_requests']}; max latency "
            f"**{f['max_latency_ms']} ms** (budget {f['budget_ms']} ms = 4 x {f['redis_timeout_ms']} ms timeout + "
            f"300 ms); sources while hung {'/'.join(f['sources_while_hung'])} ({f['answers_while_hung']} answers), "
            f"while down {'/'.join(f['sources_while_down'])} ({f['answers_while_down']}); precomputed again "
            f"{f['precomputed_again_after_sigcont_s']} s after SIGCONT, {f['precomputed_again_after_restart_s']} s "
            f"after the restart; API restarted: {'yes' if f['api_restarted'] else 'no'}")  # fmt: skip


def _catalog(f: Figures) -> str:
    return (f"{f['catalog']}: database gone → \"{f['outage_database_gone']}\", refused before any flip; read-only → "
            f"\"{f['outage_read_only']}\"; "
            f"pointer changes recorded **{f['pointer_changes_recorded']}/{f['pointer_changes']}** after "
            f"reconciliation (history: {', '.join(f['history'])})")  # fmt: skip


def _skew(f: Figures) -> str:
    error = f["error"].split(": check")[0]
    return (f"as_of {f['skew_s']:,} s ahead (tolerance {f['tolerance_s']:.0f} s) refused: \"{error}: …\"; "
            f"current run kept; keys of the skewed run in Redis: {f['keys_of_skewed_run']}")  # fmt: skip


def _logs(f: Figures) -> str:
    return (f"{f['requests']} requests with keys and features; {f['log_records']} log records and "
            f"{f['prediction_log_bytes']} bytes of prediction log scanned for {f['secrets_checked']} secrets and "
            f"feature values: **{f['leaked']} found**")  # fmt: skip


def _auth(f: Figures) -> str:
    return (f"`redis://:pw@host:port/0` loads, publishes and reads (sync and asyncio); wrong password → "
            f"StoreAuthError (a configuration error; the online reader still degrades on it) "
            f"\"{f['wrong_password_error']}\"; password in any message: "
            f"{'yes' if f['password_in_messages'] else 'no'}")  # fmt: skip


def _disk_full(f: Figures) -> str:
    return (f"{f['volume']}: exit {f['exit_code']}, \"{f['error']}\"; left in the volume: "
            f"{', '.join(f['left_in_volume']) or 'nothing'}; run recorded failed with that reason; rerun with room "
            f"committed {f['rerun_with_room_rows']:,} rows")  # fmt: skip


def _flushall(f: Figures) -> str:
    gap = ", ".join(f"{kind} {'/'.join(sources)}" for kind, sources in f["sources_in_gap"].items())
    return (f"5xx **{f['status_5xx']}/{f['requests']:,}**, failed requests {f['failed_requests']}; lost detected "
            f"after **{f['detected_after_s']} s**; {f['answers_in_gap']:,} answers in the gap: {gap}; `prescore "
            f"restore` took {f['restore_command_s']} s as a process under that load ({f['restore_reported_s']} s "
            f"restoring {f['entities']:,} entities); precomputed again {f['precomputed_again_after_flush_s']} s after "
            f"the FLUSHALL, scores differing from Parquet **{f['wrong_scores']}**; log lines: lost "
            f"{f['lost_log_lines']}, back {f['back_log_lines']}")  # fmt: skip


def _sigkill(f: Figures) -> str:
    return (f"lost detected after {f['detected_after_s']} s; answers while lost: {'/'.join(f['sources_while_lost'])}; "
            f"the reconcile task restored {f['entities']:,} entities in **{f['reconcile_s']} s**, precomputed again "
            f"{f['precomputed_again_after_kill_s']} s after the kill; next reconcile: "
            f"{f['second_reconcile']}")  # fmt: skip


def _cluster_node(f: Figures) -> str:
    return (f"{f['buckets_lost']} of {f['buckets_total']} buckets lost with the node; detected: \"{f['reason']}\"; "
            f"{f['action']} in place in **{f['restore_s']} s** ({f['entities']:,} entities served from Parquet "
            "again; the other nodes' keys unchanged)")  # fmt: skip


def _race(f: Figures) -> str:
    return (f"{f['reads']:,} reads of 200 ids: mixed **{f['mixed']}**, inexact {f['inexact']}; restore "
            f"{f['restore_status']}; runs seen: {len([r for r in f['runs_seen'] if r != 'None'])} (and misses); "
            "the publish's run served at the end")  # fmt: skip


def audit_row(audit: Figures | None) -> tuple[str, str, str, str]:
    """``make audit`` over this host's view of the advisory service: a vulnerability fails the report; packages the
    service could not answer for are shown as not checked (the gate itself, ``make audit``, fails closed on them)."""
    fault, how = "known vulnerabilities in the locked dependencies", "`make audit` (`.ci/audit.py`, pip-audit)"
    if audit is None:
        return fault, how, "not run", "not run"
    if "error" in audit:
        return fault, how, f"**not checked**: {audit['error'].splitlines()[0]}", "not checked"
    if audit["vulnerable"]:
        return fault, how, f"**{len(audit['vulnerable'])} vulnerable**: {'; '.join(audit['vulnerable'])}", "no"
    accepted = f"; accepted: {'; '.join(audit['accepted'])}" if audit["accepted"] else ""
    if audit["not_checked"]:
        return (fault, how, f"**not checked**: {audit['not_checked']} of {audit['packages']} locked packages got no "
                f"answer from the {audit['service']} advisory service on this host (first: "
                f"{audit['first_not_checked']}); `make audit` exits 2 on this{accepted}", "not checked")  # fmt: skip
    return (fault, how, f"{audit['checked']} locked packages checked against {audit['service']}: 0 known "
            f"vulnerabilities{accepted}", "yes")  # fmt: skip


def soak_row(soak: Figures | None) -> tuple[str, str, str, str]:
    fault = "sustained load at 80 % of capacity with a publish and a rollback in the middle (soak)"
    if soak is None:
        return fault, "`bench/soak.py` (no result)", "not run", "not run"
    env, p, rss, errors = soak["environment"], soak["phases"], soak["rss_mib"], soak["errors"]
    failed = errors["non_2xx"] + errors["socket_errors"]
    events = ", ".join(f"{e['event']} {'ok' if e['ok'] else 'FAILED'} in {e['took_s']} s" for e in soak["events"])
    phases = ("before", "during", "after")

    def each(key: str, fmt: str = "{:.1f}") -> str:
        return " / ".join("?" if p[n].get(key) is None else fmt.format(p[n][key]) for n in phases)

    observed = (f"capacity {soak['capacity']['rps']:,.0f} rps at -c{env['connections']}; target "
                f"{soak['target_rps']:,.0f} rps ({env['load']:.0%}), served {each('rps', '{:,.0f}')} rps "
                f"before/during/after; errors **{failed}/{soak['answers']:,}** (non-2xx {errors['non_2xx']}, socket "
                f"{errors['socket_errors']}), not precomputed {errors['not_precomputed']}; p99 **{each('p99_ms')} "
                f"ms** (p50 {each('p50_ms')}); API CPU per answer {each('api_cpu_ms_per_answer', '{:.3f}')} ms, host "
                f"load {each('load_average_1m_end', '{:.2f}')}; {events}; runs served during: "
                f"{', '.join(soak['runs_served_during'])}, after: {', '.join(soak['runs_served_after'])}; API RSS "
                f"{rss['first']} → {rss['last']} MiB (**growth {rss['growth']} MiB**, second half "
                f"{rss['growth_second_half']} MiB, max {rss['max']})")  # fmt: skip
    return fault, f"`{env['command']}` ({env['duration_s']:.0f} s)", observed, "yes" if soak["nothing_lost"] else "no"


CASES = [
    Case("loader process SIGKILLed mid-load while a reader reads",
         "tests/reliability/test_loader_kill.py::test_loader_killed_mid_publish_with_a_concurrent_reader",
         "only the published run is ever visible", "loader_kill", _loader_kill),
    Case("loader killed mid-load (forked process), then cleanup",
         "tests/warehouse/store/test_cleanup.py::test_loader_killed_mid_load_is_cleaned_up",
         "current run served; orphan kept while its heartbeat is fresh, then removed"),
    Case("publishes, rollbacks and cleanups while a reader reads",
         "tests/warehouse/store/test_readers.py::test_reader_sees_old_or_new_run_never_a_mix",
         "every get_many returns exactly one run's values, never a mix or a miss"),
    Case("cleanup interrupted half-way", "tests/warehouse/store/test_cleanup.py::"
         "test_cleanup_removes_leftovers_of_an_interrupted_cleanup",
         "the next cleanup sweeps the leftover keys; the current run is untouched"),
    Case("Redis hangs mid-publish, restarted on the same port",
         "tests/warehouse/store/test_publication.py::test_redis_restart_during_publish",
         "StoreUnavailableError; the retried publish lands once (no duplicate history)"),
    Case("Redis out of memory during a load",
         "tests/warehouse/store/test_writer.py::test_out_of_memory_load_fails_cleanly",
         "clear StoreError; partial run deleted; published run still served"),
    Case("Redis hangs, then is stopped and restarted, under a real uvicorn API",
         "tests/reliability/test_api_redis_restart.py::test_api_under_uvicorn_survives_redis_hang_and_restart",
         "no 5xx, answers within budget, fallback/default while down, precomputed again without an API restart",
         "api_redis_restart", _api_restart),
    Case("Redis killed while the API serves (in-process app)",
         "tests/online/test_service.py::test_redis_killed_while_serving_degrades_then_recovers",
         "every answer 200 from fallback/default under 250 ms; /readyz degraded; recovers by itself"),
    Case("Redis unreachable for `prescore lookup`",
         "tests/jobs/test_serve.py::test_lookup_with_redis_down_answers_from_fallback_and_default",
         "answers from the fallback model and the default"),
    Case("more concurrent requests than max_in_flight",
         "tests/online/test_app.py::test_requests_beyond_max_in_flight_are_shed_with_retry_after",
         "503 + Retry-After for the excess, no queueing"),
    Case("catalog database gone / read-only at publish",
         "tests/reliability/test_catalog_outage.py::test_catalog_outage_at_publish_never_leaves_an_unrecorded_pointer",
         "no pointer change stays without its catalog record", "catalog_outage", _catalog),
    Case("catalog unreachable (library)",
         "tests/warehouse/catalog/test_repository.py::test_unreachable_catalog_is_a_clear_error",
         "CatalogError naming the URL, password hidden"),
    Case("catalog unreachable (CLI)", "tests/jobs/test_cli.py::test_unreachable_catalog_is_one_line",
         "exit 1 with one line"),
    Case("clock skew: run as_of in the future (store)",
         "tests/reliability/test_clock_skew.py::test_future_as_of_is_refused_at_create_run",
         "refused beyond 300 s ahead, accepted within; nothing written"),
    Case("clock skew: committed run a day ahead at publish",
         "tests/reliability/test_clock_skew.py::test_publish_refuses_a_run_scored_with_a_skewed_clock",
         "publish refused with a clear error", "clock_skew", _skew),
    Case("scores output unwritable", "tests/jobs/test_score.py::test_unwritable_output_fails_cleanly",
         "clear error; run recorded failed"),
    Case("scores volume full mid-write (real ENOSPC)",
         "tests/reliability/test_disk_full.py::test_volume_full_mid_write_fails_clearly_and_commits_nothing",
         "one clear line, run failed, nothing committed or staged, rerun with room commits", "disk_full", _disk_full),
    Case("features volume full during synth (real ENOSPC)",
         "tests/reliability/test_disk_full.py::test_volume_full_during_synth_is_one_line_and_no_partial_partition",
         "one line, exit 1, no traceback, no partition visible half-written"),
    Case("a scoring task crashes mid-job", "tests/jobs/test_score.py::test_crash_mid_job_leaves_nothing_committed",
         "nothing committed or staged; the rerun completes"),
    Case("a Dask worker SIGKILLed mid-job", "tests/jobs/test_score.py::test_worker_killed_mid_job_still_completes",
         "the job completes with every row"),
    Case("SIGTERM mid-backfill, then resume", "tests/jobs/test_backfill.py::test_sigterm_mid_backfill_then_resume",
         "no half-committed partition; the rerun does not redo work"),
    Case("publish task crashes mid-load, retried", "tests/jobs/test_orchestration.py::"
         "test_publish_retried_after_a_crash_mid_load_publishes_once",
         "reloaded and published once; one catalog record"),
    Case("publish task crashes mid-load, retried by Airflow", "tests/dags/test_dag_run.py::"
         "test_publish_task_retried_after_a_crash_mid_load_is_idempotent",
         "one run, one publication"),
    Case("prediction drain crashes between write and delete", "tests/jobs/test_prediction_drain.py::"
         "test_crash_between_write_and_delete_then_rerun_gives_no_duplicates_and_no_loss",
         "every record exactly once after the rerun"),
    Case("prediction drain crashes while writing", "tests/jobs/test_prediction_drain.py::"
         "test_crash_while_writing_leaves_no_visible_part_and_loses_nothing",
         "no visible partial file; nothing lost"),
    Case("a client writes a 2 MB / 20 MB oversize body (declared or chunked, `Connection: close`) while others "
         "do lookups", "tests/online/test_admission.py::test_oversize_bodies_under_load_read_413_while_lookups_succeed",
         "every oversize request reads the 413 message with `Connection: close`; every lookup 200"),
    Case("oversize body beyond the discard bound, or stalled", "tests/online/test_admission.py::"
         "test_body_beyond_the_discard_bound_is_cut_off",
         "the connection is cut off at the bound, never held open"),
    Case("5M answers into the prediction log on the score store's Redis (maxmemory 64 MB, noeviction)",
         "tests/online/test_prediction_log.py::"
         "test_five_million_answers_stay_within_the_budget_and_publishing_still_works",
         "stream MEMORY USAGE within its budget (10 % of maxmemory); every answer in the stream or counted as "
         "trimmed; a 300k-entity run publishes afterwards and is served precomputed"),
    Case("prediction log over its budget under the API, then drained",
         "tests/online/test_prediction_log.py::test_api_trims_counts_and_the_drain_reports_the_loss",
         "trimmed answers counted on /metrics and reported by the drain; drained + trimmed = answered"),
    Case("prediction log's Redis down, then back", "tests/online/test_prediction_log.py::"
         "test_redis_down_keeps_records_buffered_and_bounded",
         "records buffered up to capacity, the excess dropped and counted; written within the budget once back"),
    Case("prediction-log stream deleted by hand behind the writer",
         "tests/online/test_prediction_log.py::test_counter_heals_when_the_stream_was_deleted_by_hand",
         "the byte counter heals on the next append"),
    Case("retention pass interrupted mid-removal of a score run", "tests/jobs/test_retention.py::"
         "test_an_interrupted_removal_is_finished_and_never_leaves_a_dangling_reference",
         "no committed row points at missing files; the next pass finishes the removal"),
    Case("retention while writers crashed or still run", "tests/jobs/test_retention.py::"
         "test_leftovers_of_crashed_writers_go_after_their_age_but_not_while_their_run_runs",
         "leftovers removed after their age, never while the catalog shows their run running"),
    Case("random entity ids (any script, up to 128 bytes) written and read back",
         "tests/reliability/test_properties.py::test_every_written_entity_is_read_back_exactly",
         "50 examples: every id read back bit for bit, both write paths"),
    Case("ids of mixed byte lengths in one write batch (first and last of length L, L x count bytes in all)",
         "tests/reliability/test_properties.py::test_mixed_length_batch_is_read_back",
         "the shorter ids go to the wrong bucket (`score_layout.crc32s` takes its equal-length fast path) and are "
         "never served, though finalize_run's count matches; see also `test_crc32s_agrees_with_zlib_on_a_mixed_"
         "length_batch`. The property tests leave this shape out until it is fixed"),
    Case("bucket function across processes",
         "tests/reliability/test_properties.py::test_bucket_of_is_stable_across_processes",
         "50 examples: CRC-32 mod n, same in another interpreter and hash seed; vectorised twin agrees "
         ""),
    Case("staleness ladder on random ages and policies", "tests/reliability/test_properties.py::test_ladder_invariants",
         "50 examples: documented rungs; an older score never gets a better rung"),
    Case("random bad feature values (batch contract)",
         "tests/reliability/test_properties.py::test_contract_names_the_field_of_random_bad_values",
         "50 examples: the violation names the column with the exact row count"),
    Case("random bad feature values (online request)",
         "tests/reliability/test_properties.py::test_online_features_check_names_the_field",
         "50 examples: 422 names `features.<name>`"),
    Case("fuzzed requests from the OpenAPI schema",
         "tests/online/test_schema_fuzz.py::test_api_conforms_and_never_fails",
         "no 5xx; every 4xx carries a code and a message; responses match the schema"),
    Case("Redis FLUSHALL under a live uvicorn API with concurrent lookups, then `prescore restore`",
         "tests/reliability/test_redis_data_loss.py::"
         "test_flushall_under_a_live_api_is_detected_and_restored_from_parquet",
         "no 5xx; fallback/default with `source` saying so until the restore; /readyz degraded and /v1/models `lost`; "
         "then precomputed with the Parquet scores", "redis_flushall", _flushall),
    Case("Redis SIGKILLed and restarted empty under a served app, healed by the reconcile loop",
         "tests/reliability/test_redis_data_loss.py::"
         "test_redis_sigkilled_and_restarted_empty_is_healed_by_the_reconcile_loop",
         "lost (not no_run) until the reconcile task restores it; Parquet scores again; the next reconcile is a no-op",
         "redis_sigkill_empty", _sigkill),
    Case("one node of a 3-primary Redis Cluster restarted empty",
         "tests/reliability/test_redis_data_loss.py::test_one_cluster_node_restarted_empty_is_detected_and_repaired",
         "only its buckets missing: found by the sampled check although the pointer survived; repaired in place",
         "cluster_node_empty", _cluster_node),
    Case("a restore racing a nightly publish (restore first)",
         "tests/reliability/test_redis_data_loss.py::"
         "test_a_restore_racing_a_nightly_publish_lets_one_order_win_and_mixes_nothing",
         "readers see one run's exact scores or nothing, never a mix; the publish's run is live and recorded at the "
         "end", "restore_race_restore", _race),
    Case("a restore racing a nightly publish (publish first)",
         "tests/reliability/test_redis_data_loss.py::"
         "test_a_restore_racing_a_nightly_publish_lets_one_order_win_and_mixes_nothing",
         "the same, with the publish ahead: the restore is superseded or finds nothing to do",
         "restore_race_publish", _race),
    Case("the live run's Parquet deleted by retention when Redis lost it",
         "tests/jobs/test_restore.py::"
         "test_live_run_deleted_by_retention_is_refused_and_falls_back_only_when_the_models_file_allows",
         "one-line refusal naming the run and the option, nothing written; with restore_fallback_to_older_run the "
         "previous run is restored and recorded"),
    Case("the live run's Parquet no longer matching its manifest",
         "tests/jobs/test_restore.py::test_parquet_that_no_longer_matches_its_manifest_is_refused",
         "refused, saying which part differs and how"),
    Case("retention while Redis has lost the live run",
         "tests/jobs/test_restore.py::"
         "test_retention_keeps_the_catalogs_live_run_and_rollback_target_while_redis_has_lost_them",
         "the catalog's live run and rollback target keep their Parquet; the restore brings them back"),
    Case("a Redis whose maxmemory-policy would evict score buckets (publish, restore)",
         "tests/jobs/test_restore.py::test_publish_and_restore_refuse_a_redis_that_would_evict_score_buckets",
         "allkeys-* refused before anything is written; volatile-* and a refused CONFIG accepted"),
    Case("a Redis whose maxmemory-policy would evict score buckets (API start-up)",
         "tests/online/test_store_watch.py::test_an_eviction_policy_that_would_evict_scores_is_reported_at_start_up",
         "logged once, /readyz degraded with the fix; lookups still answer"),
    Case("the catalog unreadable under the API",
         "tests/online/test_store_watch.py::test_a_catalog_that_breaks_degrades_to_its_last_answer",
         "the API stays ready and judges lost scores against the catalog's last answer"),
    Case("missing or wrong API key", "tests/online/test_app.py::test_api_keys_and_admin_keys",
         "401; admin routes need an admin key; keys kept as sha256 and compared with hmac.compare_digest"),
    Case("secrets and features in logs",
         "tests/reliability/test_security.py::test_logs_and_prediction_log_never_carry_features_or_keys",
         "no key, digest or feature value in logs or in the prediction log", "log_hygiene", _logs),
    Case("Redis with AUTH; wrong password",
         "tests/reliability/test_security.py::test_redis_auth_in_the_url_and_a_wrong_password_is_a_clear_error",
         "auth URL works; wrong password is a clear error without the password", "redis_auth", _auth),
    Case("Redis over TLS with AUTH; certificate from an unknown CA; plain client on the TLS port",
         "tests/reliability/test_redis_tls.py::test_rediss_with_auth_serves_and_an_unknown_ca_is_refused",
         "`rediss://` loads, publishes and reads (sync and asyncio); an unknown CA is refused as a configuration "
         "error, never trusted; plaintext fails fast; no password in any message", "redis_tls",
         lambda f: f"{f['entities']:,} entities through `rediss://:pw@…?ssl_ca_certs=`; unknown CA → "
                   f"\"{f['untrusted_ca_error']}\"; plaintext → \"{f['plaintext_to_tls_port_error']}\""),
    Case("wrong Redis password under the API",
         "tests/reliability/test_security.py::test_api_with_a_refused_password_says_why_in_readyz_and_keeps_answering",
         "/readyz 503 saying Redis refused the credentials, logged once, lookups still answer, no password shown"),
    Case("wrong or missing Redis password (CLI)",
         "tests/jobs/test_cli.py::test_wrong_redis_password_is_a_user_error_without_the_password",
         "one line saying to fix PRESCORE_REDIS_URL, exit 1, no password, no traceback"),
    Case("Redis down (CLI)", "tests/jobs/test_cli.py::test_redis_down_is_one_line_and_exit_3",
         "one line saying to retry, exit 3, no traceback"),
    Case("a locked package with a known vulnerability", "tests/deploy/test_audit.py::"
         "test_known_vulnerability_fails_naming_package_id_and_fix",
         "`make audit` exits 1 naming the package, the advisory ids and the fixed release"),
    Case("advisory service unreachable or silent for a package", "tests/deploy/test_audit.py::"
         "test_a_package_the_service_cannot_answer_for_is_not_counted_clean",
         "`make audit` exits 2 (incomplete), never counts an unchecked package as clean"),
]  # fmt: skip


def junit_outcomes(path: Path) -> dict[str, tuple[str, float]]:
    """pytest node id (parameters dropped) → (passed | failed | skipped, seconds) from a JUnit XML file; a
    parametrised test fails when any case failed, and passed when any case passed."""
    if not path.exists():
        return {}
    seen: dict[str, list[tuple[str, float]]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "").split("[")[0]
        outcome, skipped = "passed", case.find("skipped")
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif skipped is not None:
            outcome = "xfailed" if skipped.get("type") == "pytest.xfail" else "skipped"
        seen.setdefault(node, []).append((outcome, float(case.get("time", 0))))
    out = {}
    for node, runs in seen.items():
        kinds = {k for k, _ in runs}
        final = next((k for k in ("failed", "xfailed", "passed") if k in kinds), "skipped")
        out[node] = (final, sum(t for _, t in runs))
    return out


def row(case: Case, outcomes: dict[str, tuple[str, float]], results: Path) -> tuple[list[str], bool]:
    outcome, seconds = outcomes.get(case.test, ("not run", 0.0))
    how = f"`{case.test}`"
    if outcome == "xfailed":  # a strict xfail: the test reproduces a known bug
        return [case.fault, how, f"reproduced (known bug, strict xfail): {case.claim}", "**no**"], False
    if outcome != "passed":
        return [case.fault, how, f"{outcome}: {case.claim}", "not run" if outcome != "failed" else "no"], False
    observed = f"passed in {seconds:.1f} s: {case.claim}"
    if case.figures and case.render:
        path = results / f"{case.figures}.json"
        if path.exists():
            observed = f"passed in {seconds:.1f} s: " + case.render(json.loads(path.read_text()))
    return [case.fault, how, observed, "yes"], True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "reliability")
    parser.add_argument("--out", type=Path, default=ROOT / "RELIABILITY.md")
    parser.add_argument("--pytest-command", default="make reliability (pytest part)")
    args = parser.parse_args()

    outcomes = junit_outcomes(args.results / "junit.xml")
    soak_path = args.results / "soak.json"
    soak = json.loads(soak_path.read_text()) if soak_path.exists() else None
    rows, ok = [], True
    for case in CASES:
        cells, passed = row(case, outcomes, args.results)
        rows.append(cells)
        ok &= passed or cells[2].startswith("skipped")  # skipped (e.g. no PostgreSQL here): shown, not failed
    soak_cells = soak_row(soak)
    rows.append(list(soak_cells))
    ok &= soak_cells[3] == "yes"
    audit_path = args.results / "audit.json"
    audit_cells = audit_row(json.loads(audit_path.read_text()) if audit_path.exists() else None)
    rows.append(list(audit_cells))
    ok = ok and audit_cells[3] != "no"

    env = soak["environment"] if soak else {}
    short_soak = env.get("duration_s", 0) < FULL_SOAK_S
    n_passed = sum(1 for r in rows if r[3] == "yes")
    lines = [
        "# Reliability",
        "",
        "Every fault, load and security case of prescore, how it is tested, and what the last run observed. Generated "
        "by `make reliability` (`bench/reliability_report.py`); do not edit by hand.",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average before the soak {env.get('load_average_1m', '?')} (shared "
        "host: latency figures carry its noise).",
        f"- Tests: `{args.pytest_command}`.",
        f"- Soak: `{env.get('command', 'not run')}`: {env.get('duration_s', 0):.0f} s in three equal phases, "
        f"{env.get('entities', 0):,} published entities, GETs over 1,000 of them, wrk `-t1 "
        f"-c{env.get('connections', '?')}` paced by a per-request delay (this wrk has no `-R`)"
        + (f"; shorter than the {FULL_SOAK_S} s of `make reliability`." if short_soak else "."),
        f"- {n_passed} of {len(rows)} cases lost nothing; cases marked *not run* were skipped or deselected; a "
        "*known bug* row is a strict xfail test that reproduces a loss still to be fixed.",
        "",
        "| fault or load | how it is tested | what was observed | nothing lost |",
        "|---|---|---|---|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows),
        "",
    ]  # fmt: skip
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}: {n_passed}/{len(rows)} cases lost nothing")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
