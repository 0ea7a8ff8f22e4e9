"""prescore's Airflow DAGs — configuration only; every task body is one call into ``jobs.orchestration``.

- ``prescore_score__<model>``: nightly scoring, one DAG per model of the models file, on the model's cron.
- ``prescore_rescore``: manual (UI) rescoring of one (model, date), with validated Params.
- ``prescore_train__<model>``: weekly training; promotes only when not worse than production.
- ``prescore_drain_predictions``: hourly drain of the online prediction log to Parquet.
- ``prescore_retention``: daily enforcement of every store's bound (``jobs.retention``).
- ``prescore_reconcile``: every 5 minutes, restores the scores of any model Redis lost (``jobs.restore``).
- ``prescore_promote``: manual promotion of a challenger through its gate (``jobs.promote``), with validated Params.
- ``prescore_delta``: every 15 minutes, scores each model's new intra-day delta drops as a delta run and publishes
  it as an overlay of the live run (``jobs.delta``).

Parse time reads one local file, the models file (``PRESCORE_MODELS_FILE``): the DAG list comes from it. Nothing
else happens at parse time — no database, Redis, network, ``Variable.get`` or ``now()``; Dask, XGBoost and the
store are imported inside the task functions in ``jobs/orchestration.py``.

Partition date: a scoring run scores the UTC date of its ``data_interval_start``. The nightly schedule is a
``CronDataIntervalTimetable`` on the model's cron (UTC): the run for the interval [2026-11-20 02:00,
2026-11-21 02:00) starts when it closes, at 2026-11-21 02:00, and scores partition ``dt=2026-11-20``. For scheduled
and backfill runs that date is also the logical date (``ds``), so an Airflow backfill over logical dates
2026-11-18..2026-11-20 scores exactly those partitions. A manual run covers the last interval that closed before
it (``dag.test(logical_date=2026-11-21T02:00Z)`` scores 2026-11-20). A manual run triggered without a logical date
(Airflow 3's default from ``airflow dags trigger`` and the REST API) has no data interval: it scores the same
partition, that of the last interval closed by its ``run_after`` (``orchestration.manual_partition``). Never
``now()``.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import (
    Asset,
    CronDataIntervalTimetable,
    CronTriggerTimetable,
    ExceptionRetryPolicy,
    Param,
    RetryAction,
    RetryRule,
    TriggerRule,
    conf,
    dag,
    task,
)
from airflow.sdk.exceptions import AirflowSkipException

from jobs import orchestration

CONFIG = orchestration.project_config()  # the accepted parse-time read: one local YAML file
START = pendulum.datetime(2026, 1, 1, tz="UTC")
OWNER = "prescore"
DASK_POOL = "prescore_dask"  # create it (dags/README.md): airflow pools set prescore_dask 1 "prescore Dask jobs"
# The scored partition (module docstring). A manual run without a logical date has no data interval in Airflow 3
# (data_interval_start undefined): it scores the last closed interval of the schedule (manual_partition).
PARTITION = (
    "{{ data_interval_start | ds if data_interval_start is defined and data_interval_start"
    " else manual_partition(dag_run.run_after) }}"
)
# Training uses the days up to the one before the trigger (its run_after where the run has no logical date).
TRAIN_END = "{{ macros.ds_add(ds if ds is defined and ds else dag_run.run_after | ds, -1) }}"
TRAIN_SCHEDULE = "0 4 * * 0"  # Sundays 04:00 UTC
DRAIN_SCHEDULE = "7 * * * *"  # hourly, off the full hour
RETENTION_SCHEDULE = "30 5 * * *"  # daily 05:30 UTC: after the nightly publishes and Sunday's training
RECONCILE_SCHEDULE = "*/5 * * * *"  # the longest a model's scores stay lost before a restore starts
DELTA_SCHEDULE = "*/15 * * * *"  # the longest a complete delta drop waits before it is scored
# Airflow configuration ([prescore] section or AIRFLOW__PRESCORE__* variables), not a Variable: no DB at parse.
FEATURE_WAIT_TIMEOUT_S = conf.getint("prescore", "feature_wait_timeout_s", fallback=6 * 3600)
FEATURE_POKE_INTERVAL_S = conf.getint("prescore", "feature_poke_interval_s", fallback=300)

DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=30),
    "execution_timeout": timedelta(minutes=30),
    # missing or bad data, a blocked quality gate or a broken config do not get better by retrying
    "retry_policy": ExceptionRetryPolicy(
        rules=[
            RetryRule(
                exception=list(orchestration.NON_RETRYABLE),
                action=RetryAction.FAIL,
                reason="not retryable: create or fix the partition, the models file or the artifact",
            )
        ]
    ),
}
DEVICE_PARAM = Param(
    "auto",
    type="string",
    enum=["auto", "cpu", "cuda"],
    description="Where XGBoost scores. auto: the CUDA GPU when the machine that runs the task has one (with the "
    "gpu extra installed), else the CPU. cpu: always the CPU. cuda: the GPU; the run fails at once without one.",
)
FORCE_PARAM = Param(
    False,
    type="boolean",
    description="Score again even when a committed run of the same model version and input exists (off: that "
    "run is reused and nothing is recomputed). It does not force publication: the quality gate and the newer-run "
    "check still apply.",
)


def _published(result: dict[str, Any]) -> dict[str, Any]:
    """A publication the store declined (a newer run is current) ends the task as skipped, not failed."""
    if not result["published"]:
        raise AirflowSkipException(result["reason"])
    return result


# ---- tasks shared by the scoring DAGs -------------------------------------------------------------------
@task.sensor(
    task_id="wait_for_features",
    mode="reschedule",
    poke_interval=FEATURE_POKE_INTERVAL_S,
    timeout=FEATURE_WAIT_TIMEOUT_S,
    execution_timeout=timedelta(minutes=5),
)
def wait_for_features(model: str, day: str) -> bool:
    return orchestration.feature_partition_ready(model, day)


@task(multiple_outputs=False, task_id="validate_contract", execution_timeout=timedelta(hours=1))
def validate_contract(model: str, day: str) -> dict[str, Any]:
    return orchestration.validate_features(model, day)


@task(multiple_outputs=False, task_id="publish", pool=DASK_POOL, execution_timeout=timedelta(hours=1))
def publish(model: str, scored: Any) -> dict[str, Any]:  # Any: an XComArg at parse time, a dict at run time
    return _published(orchestration.publish(model, scored["run_id"]))


@task(multiple_outputs=False, task_id="shadow", pool=DASK_POOL, execution_timeout=timedelta(hours=3))
def shadow(model: str, day: str, checked: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
    opts = params or {}
    return orchestration.shadow(
        model, day, device=opts.get("device", "auto"), force=opts.get("force", False), validated=checked["fingerprint"]
    )


@task(multiple_outputs=False, task_id="compare", execution_timeout=timedelta(minutes=30))
def compare(model: str, day: str) -> dict[str, Any]:
    return orchestration.compare(model, day)


@task(
    multiple_outputs=False,
    task_id="monitor",
    trigger_rule=TriggerRule.ALL_DONE,
    execution_timeout=timedelta(minutes=30),
)
def monitor(model: str, day: str) -> dict[str, Any]:
    result = orchestration.monitor(model, day)
    if not result["monitored"] and not result["reports"]:
        raise AirflowSkipException(result["reason"])
    return result


@task(multiple_outputs=False, task_id="verify_online", execution_timeout=timedelta(minutes=10))
def verify_online(model: str, published: Any) -> dict[str, Any]:
    return orchestration.verify_online(model, published["run_id"])


@task(
    multiple_outputs=False,
    task_id="retain_and_record",
    trigger_rule=TriggerRule.NONE_FAILED,
    execution_timeout=timedelta(minutes=15),
)
def retain_and_record(model: str) -> dict[str, Any]:
    return orchestration.retain_and_record(model)


def _score_task(outlets: list[Asset]) -> Any:
    @task(
        multiple_outputs=False, task_id="score", pool=DASK_POOL, execution_timeout=timedelta(hours=3), outlets=outlets
    )
    def score(model: str, day: str, checked: Any, params: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = params or {}
        return orchestration.score(
            model, day, device=opts.get("device", "auto"), force=opts.get("force", False),
            validated=checked["fingerprint"],
        )  # fmt: skip

    return score


# ---- nightly scoring, one DAG per model ------------------------------------------------------------------
NIGHTLY_DOC = """\
### Nightly scoring of `{model}`

Scores feature set `{feature_set}`. Partition = UTC date of `data_interval_start`: the logical date of
scheduled and backfill runs; a run starts when its interval closes, one schedule later.

`wait_for_features` (reschedule sensor) → `validate_contract` → `score` (Dask, pool `{pool}`; emits asset
`prescore://scores/{model}`; scores the input `validate_contract` checked, confirmed by its fingerprint, without
validating it again) → `publish` (load into Redis, verify, quality gate max_psi={max_psi}, pointer flip;
*skipped* when a newer run is current, e.g. in a backfill) → `verify_online` (sampled `ScoreReader` lookups equal
the Parquet: the one check after the pointer moved) → `retain_and_record` (keep {keep_runs} rollback runs, record
the store status). Next to `publish`, `shadow` scores every challenger version on the same partition and loads
each behind its challenger pointer, never the live one; a challenger's failure is listed in its result, never
blocks the champion. Then `compare` compares each challenger's run with the champion's (PSI, rank correlation,
changed decisions, realized quality once the date's labels exist; earlier dates whose labels arrived since are
compared again) and stores it for the promotion gate (`prescore compare`, `prescore_promote`). Last, `monitor`
(after `compare` and `verify_online`, whatever their outcome: a blocked publish is when drift matters most)
measures the partition's feature drift against the production version's baseline, score drift, realized quality
once labels exist (earlier dates whose labels arrived since are monitored again) and the serving mix of the
prediction log (`prescore monitor`); *skipped* when the date has no committed run.

A blocked quality gate fails `publish` without retrying; the current run stays served. Inspect it, then
`prescore publish --model {model} --run <run_id> --force`, or rescore with `prescore_rescore`.
"""


def nightly_dag(model: str) -> Any:
    spec = CONFIG.model(model)

    @dag(
        dag_id=f"prescore_score__{model}",
        schedule=CronDataIntervalTimetable(spec.schedule, timezone="UTC"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=20),
        default_args=DEFAULT_ARGS,
        tags=["prescore", "scoring", model],
        doc_md=NIGHTLY_DOC.format(
            model=model, feature_set=spec.feature_set, pool=DASK_POOL, max_psi=spec.max_psi, keep_runs=spec.keep_runs
        ),
        params={"device": DEVICE_PARAM, "force": FORCE_PARAM},
        user_defined_macros={"manual_partition": functools.partial(orchestration.manual_partition, spec.schedule)},
    )
    def nightly() -> None:
        score = _score_task([Asset(name=f"prescore_scores__{model}", uri=f"prescore://scores/{model}")])
        checked = validate_contract(model, PARTITION)
        wait_for_features(model, PARTITION) >> checked
        scored = score(model, PARTITION, checked)
        verified = verify_online(model, publish(model, scored))
        compared = scored >> shadow(model, PARTITION, checked) >> compare(model, PARTITION)  # after the score
        verified >> retain_and_record(model)
        [compared, verified] >> monitor(model, PARTITION)  # also after a blocked publish (trigger rule all_done)

    return nightly()


def _publish_requested(context: Any) -> bool:
    return bool(context["params"]["publish"])


# ---- manual rescoring ------------------------------------------------------------------------------------
RESCORE_DOC = """\
### Rescore one partition (trigger from the UI)

The partition scored is the **`date` Param**, not the *Logical Date* shown above the Params: that one only
names the run (it defaults to now) and is ignored here.

Params: `model`, `date` (required, YYYY-MM-DD), `publish`, `device`, `force` (score again even when a committed
run of the same model version and input exists). `validate_contract` → `score` → `publish` (skipped when
`publish` is false, or when a newer run is current) → `verify_online` → `retain_and_record`. The store never
publishes older scores over newer ones from here: use `prescore publish --force` for that.

A missing, incomplete or unreadable partition fails `validate_contract` at once, without retries, with the path
and the fix in its log (create it with `prescore synth`, or pick another date).
"""


@dag(
    dag_id="prescore_rescore",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=2,
    default_args=DEFAULT_ARGS,
    tags=["prescore", "scoring", "manual"],
    doc_md=RESCORE_DOC,
    params={
        "model": Param(
            CONFIG.model_names[0], type="string", enum=CONFIG.model_names, description="Model of the models file."
        ),
        "date": Param(
            type="string",
            format="date",
            description="Partition to score, YYYY-MM-DD (required): the feature partition dt=<date>. This, not the "
            "Logical Date above, picks the data.",
        ),
        "publish": Param(
            True,
            type="boolean",
            description="After scoring, load the run into Redis, check it and make it the run the online API "
            "serves, when it passes the quality gate (max_psi) and is not older than the run served now (then "
            "publish ends skipped). Off: the scores are only written to Parquet.",
        ),
        "device": DEVICE_PARAM,
        "force": FORCE_PARAM,
    },
)
def prescore_rescore() -> None:
    model, day = "{{ params.model }}", "{{ params.date }}"
    scored = _score_task([])(model, day, validate_contract(model, day))
    publish_if_asked = task.run_if(_publish_requested, skip_message="not published: param publish is false")(
        publish.override()
    )
    verified = verify_online(model, publish_if_asked(model, scored))
    verified >> retain_and_record(model)


# ---- weekly training -------------------------------------------------------------------------------------
TRAIN_DOC = """\
### Weekly training of `{model}`

`train` trains the primary and fallback models on the days up to the day before the run's logical date
(UTC), registers both and promotes each only when its hold-out AUC is not worse than production's by more
than `training.promote_margin`. `report` summarises what was promoted. Nightly scoring
picks up a promoted primary model on its next run; online readers load a promoted fallback model on
`POST /v1/admin/reload` (or at restart).
"""


@task(multiple_outputs=False, task_id="train", execution_timeout=timedelta(hours=3))
def train(model: str, day: str) -> dict[str, Any]:
    return orchestration.train(model, day)


@task(multiple_outputs=False, task_id="report", execution_timeout=timedelta(minutes=5))
def report(trained: Any) -> dict[str, Any]:
    return orchestration.training_summary(trained)


def training_dag(model: str) -> Any:
    @dag(
        dag_id=f"prescore_train__{model}",
        schedule=CronTriggerTimetable(TRAIN_SCHEDULE, timezone="UTC"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["prescore", "training", model],
        doc_md=TRAIN_DOC.format(model=model),
    )
    def training() -> None:
        report(train(model, TRAIN_END))

    return training()


# ---- prediction-log drain --------------------------------------------------------------------------------
DRAIN_DOC = """\
### Drain the online prediction log

Moves the entries of the prediction-log Redis stream to Parquet under `$PRESCORE_HOME/prediction_logs/`.
Exactly once: entries leave the stream only after their file is in place, and a retry first deletes what is
already durable, so retries are safe. A second concurrent drain is refused by a Redis lock.
"""


@dag(
    dag_id="prescore_drain_predictions",
    schedule=CronTriggerTimetable(DRAIN_SCHEDULE, timezone="UTC"),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 3},
    tags=["prescore", "online", "prediction-log"],
    doc_md=DRAIN_DOC,
)
def prescore_drain_predictions() -> None:
    @task(multiple_outputs=False, task_id="drain", execution_timeout=timedelta(minutes=30))
    def drain() -> dict[str, Any]:
        return orchestration.drain_predictions()

    drain()


# ---- retention -------------------------------------------------------------------------------------------------
RETENTION_DOC = """\
### Bound every store prescore grows

One task, `apply_retention` (`prescore retention` runs the same function): Redis runs beyond each model's
`keep_runs` and runs loaded but never published; score-run Parquet of partitions older than
`PRESCORE_RETENTION_SCORE_DAYS`; leftovers of crashed writers; old catalog rows (failed runs, publications);
registry versions beyond `PRESCORE_RETENTION_MODEL_VERSIONS`; old prediction-log days; oversized log files.
Never the live run, a rollback target, the model's newest committed run or a production model version. Safe to
retry: a second pass removes nothing, and an interrupted one is finished by the next.
"""


@dag(
    dag_id="prescore_retention",
    schedule=CronTriggerTimetable(RETENTION_SCHEDULE, timezone="UTC"),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prescore", "retention"],
    doc_md=RETENTION_DOC,
)
def prescore_retention() -> None:
    @task(multiple_outputs=False, task_id="apply_retention", execution_timeout=timedelta(minutes=30))
    def apply_retention() -> dict[str, Any]:
        return orchestration.apply_retention()

    apply_retention()


# ---- reconcile -------------------------------------------------------------------------------------------------
RECONCILE_DOC = """\
### Restore scores Redis lost

One task, `restore_lost_runs` (`prescore restore --all` runs the same restore): for each model, compare the run
the catalog says is live with what Redis holds (its pointer, the run's metadata, a sample of its buckets). When
Redis lost them (a `FLUSHALL`, a restart without persistence, a replaced cluster node), reload the run from its
committed Parquet, verify it, and flip the pointer back atomically — unless a publish got there first — then
reload its rollback targets. A healthy store costs a few Redis reads and one catalog query per model. Fails
(without retrying) when a run cannot be reloaded because its Parquet is gone; the next run tries again. Not in
the `prescore_dask` pool: a restore must not wait behind a nightly scoring job.
"""


@dag(
    dag_id="prescore_reconcile",
    schedule=CronTriggerTimetable(RECONCILE_SCHEDULE, timezone="UTC"),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["prescore", "reconcile"],
    doc_md=RECONCILE_DOC,
)
def prescore_reconcile() -> None:
    @task(multiple_outputs=False, task_id="restore_lost_runs", execution_timeout=timedelta(minutes=30))
    def restore_lost_runs() -> dict[str, Any]:
        return orchestration.reconcile_store()

    restore_lost_runs()


# ---- promotion -------------------------------------------------------------------------------------------------
PROMOTE_DOC = """\
### Promote a challenger to champion (trigger from the UI)

Params: `model`, `version` (one of the model's challengers: `prescore compare --model <m>` lists them with their
gates), `force`. `check_gate` logs every check of the model's promotion gate (`models.<m>.promotion`: dates compared,
worst PSI, changed decisions, rank correlation, labelled dates, quality loss) with its value and bound. `promote`
runs the same gate as `prescore promote` and fails without retrying when a check fails, unless `force` (recorded
with the failing checks in the catalog). It also refuses a challenger with no verified run in Redis, or one older
than the live run. On success the registry makes the version production and one Redis transaction moves the live
pointer to the challenger's already-loaded run; the old champion's run stays a rollback target (`prescore
rollback`). Nightly scoring scores the new champion from its next run.
"""


@dag(
    dag_id="prescore_promote",
    schedule=None,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["prescore", "rollout", "manual"],
    doc_md=PROMOTE_DOC,
    params={
        "model": Param(
            CONFIG.model_names[0], type="string", enum=CONFIG.model_names, description="Model of the models file."
        ),
        "version": Param(
            type="string", minLength=1, description="The challenger version to make the champion (required)."
        ),
        "force": Param(
            False,
            type="boolean",
            description="Promote although checks of the gate fail; the failing checks are recorded with the "
            "promotion. It does not skip the checks that Redis holds the challenger's run and that it is not older "
            "than the live run.",
        ),
    },
)
def prescore_promote() -> None:
    @task(multiple_outputs=False, task_id="check_gate", execution_timeout=timedelta(minutes=5))
    def check_gate(model: str, version: str) -> dict[str, Any]:
        return orchestration.promotion_gate(model, version)

    @task(multiple_outputs=False, task_id="promote", execution_timeout=timedelta(minutes=10))
    def promote(model: str, version: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return orchestration.promote(model, version, force=bool((params or {}).get("force", False)))

    model, version = "{{ params.model }}", "{{ params.version }}"
    check_gate(model, version) >> promote(model, version)


# ---- delta drops between nightly runs ----------------------------------------------------------------------------
DELTA_DOC = """\
### Score the delta drops that arrived since the last run

`score_delta`, mapped over the models of the models file (`prescore delta --model <m>` runs the same function):
the complete drops `dt=YYYY-MM-DD/delta=HHMMSS/` of the model's feature set that no delta run scored yet are
validated against the contract and scored on Dask (pool `prescore_dask`) as one delta run, committed in the catalog
and under `scores/<model>/dt=<date>/delta=<run_id>/`. Each drop is scored once (by drop id); no new drop ends the
task *skipped*. Drops of a date whose nightly run is not the live one are refused (not held): the task fails without
retrying and its log names the live run and what to do; a drop that breaks the contract fails it the same way.
One run at a time; a killed run leaves nothing committed and the next run scores its drops again.
"""


@dag(
    dag_id="prescore_delta",
    schedule=CronTriggerTimetable(DELTA_SCHEDULE, timezone="UTC"),
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args={
        **DEFAULT_ARGS,
        "retry_policy": ExceptionRetryPolicy(
            rules=[
                RetryRule(
                    exception=[*orchestration.NON_RETRYABLE, "warehouse.errors.DeltaRefusedError"],
                    action=RetryAction.FAIL,
                    reason="not retryable: fix or move the delta drop, or publish its date's nightly run",
                )
            ]
        ),
    },
    tags=["prescore", "scoring", "delta"],
    doc_md=DELTA_DOC,
)
def prescore_delta() -> None:
    @task(multiple_outputs=False, task_id="score_delta", pool=DASK_POOL, execution_timeout=timedelta(minutes=30))
    def score_delta(model: str) -> dict[str, Any]:
        from jobs.delta import NOOP, delta_task

        result = delta_task(model)
        if result["status"] == NOOP:
            raise AirflowSkipException(result["message"])
        return result

    score_delta.expand(model=CONFIG.model_names)


for _model in CONFIG.model_names:
    nightly_dag(_model)
    if CONFIG.model(_model).trained_here:  # ``training: external``: versions come from prescore register
        training_dag(_model)
prescore_rescore()
prescore_drain_predictions()
prescore_retention()
prescore_reconcile()
prescore_promote()
prescore_delta()
