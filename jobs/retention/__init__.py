"""Retention: every store prescore grows has a bound, and ``apply_retention`` enforces them all in one pass.

``prescore retention [--dry-run] [--json]`` and the daily ``prescore_retention`` DAG call it. The bounds (settings
of ``warehouse.settings``, ``PRESCORE_RETENTION_*`` and ``PRESCORE_LOG_*``):

- Redis: runs beyond the model's ``keep_runs`` rollback targets and crashed loads (``ScoreStore.cleanup``), and runs
  verified but never published for ``retention_unpublished_run_hours`` (a publish loads them again from Parquet);
- score-run Parquet of partitions more than ``retention_score_days`` old;
- delta runs (``jobs.delta``: ``delta_runs`` and their ``delta_drops`` rows, ``delta=<id>/`` and
  ``.delta-staging-<id>/``) go with their base run, whenever it goes; failed and abandoned ones after
  ``retention_failed_days`` (runs staged for ``ABANDON_AFTER_S`` are marked failed first), whatever their base;
- leftovers of crashed writers older than ``retention_leftover_hours``: score staging directories of runs the
  catalog does not show running, registry staging and removal directories, temp files of the prediction-log drain;
- catalog: runs without a heartbeat for ``ABANDON_AFTER_S`` are marked failed; failed runs and blocked publications
  go after ``retention_failed_days``, publish/rollback/reconcile records after ``retention_publication_days``, the
  record of a registry version with the version;
- registry versions beyond the newest ``retention_model_versions`` per model and kind;
- prediction-log Parquet days more than ``retention_prediction_log_days`` old;
- ``api.log``, the embedded Redis's ``redis.log`` and the output of the local Airflow services
  (``airflow-local/run/*.log``), rotated past ``log_max_mb`` (``jobs.logfiles``).

Never removed: a staged delta run, and the delta runs of the live run and its rollback targets unless they
failed; a model's live run, a run Redis still holds (rollback targets, a run loaded for a publish), the live
run and the ``keep_runs`` rollback targets the catalog's pointer records name (even when Redis lost them), the
model's newest committed run (what a rerun of the newest partition reuses, and the next run's drift baseline), a
production model version or one a running score run uses, the newest prediction-log day (it holds the drain's
watermark), and whatever a writer that the catalog shows running still uses. Output paths outside this
``PRESCORE_HOME`` are never touched.

Order and atomicity. Redis goes first: what it holds after its cleanup protects Parquet, and when it cannot be
reached (``StoreUnavailableError``) nothing at all has been removed. A score run leaves in three steps: its catalog
row becomes a tombstone (``expired``: no query for committed runs returns it, so nothing finds the run from then on),
its manifest and then its parts are deleted (``score_files.remove_run``), and the row is deleted. Files first would
leave a committed row naming missing files; the row first (without a tombstone) would leave files nothing can
attribute. With the tombstone a reader never follows a reference to missing files, and a crash at any step is
finished by the next pass. A delta run: its row and its drops' rows in one transaction (nothing finds its files
from then on), then its directories; a crash in between leaves a ``delta=<id>/`` that no row names, which the next
pass removes as a leftover. A registry version: its catalog record first, then the version leaves the listing in one
step (``Registry.remove_version``). A prediction-log day leaves the ``dt=`` listing in one rename, then its files go
(on object storage: deleted file by file).

A residual race, accepted: a run outside the score window that someone publishes by hand at the moment retention
removes it can lose its Parquet between that publish's catalog check and its Redis load (retention re-reads Redis
just before each tombstone); that publish then fails, nothing is published, and rescoring brings the run back.

``now`` (aware) decides every age; the caller reads the clock. ``dry_run`` makes the same decisions and changes
nothing, but cannot simulate ``ScoreStore.cleanup``: runs it would drop still protect their Parquet in a dry run.
A second pass right after the first removes nothing.
"""

from jobs.retention.passes import abandoned_staging, apply_retention
from jobs.retention.rules import (
    DELTAS,
    LEFTOVERS,
    LOGS,
    PREDICTION_LOGS,
    PUBLICATIONS,
    REDIS_RUNS,
    REGISTRY,
    RUN_ROWS,
    SCORES,
    STORES,
    VERSION_ROWS,
    Kept,
    Removal,
    RetentionReport,
    catalog_held_reasons,
    delta_run_verdicts,
    held_reasons,
    model_version_verdicts,
    prediction_log_day_verdicts,
    publication_verdicts,
    score_run_verdicts,
    unpublished_verdicts,
)

__all__ = [
    "DELTAS",
    "LEFTOVERS",
    "LOGS",
    "PREDICTION_LOGS",
    "PUBLICATIONS",
    "REDIS_RUNS",
    "REGISTRY",
    "RUN_ROWS",
    "SCORES",
    "STORES",
    "VERSION_ROWS",
    "Kept",
    "Removal",
    "RetentionReport",
    "abandoned_staging",
    "apply_retention",
    "catalog_held_reasons",
    "delta_run_verdicts",
    "held_reasons",
    "model_version_verdicts",
    "prediction_log_day_verdicts",
    "publication_verdicts",
    "score_run_verdicts",
    "unpublished_verdicts",
]
