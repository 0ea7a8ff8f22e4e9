"""The prescore command line: help on every verb, exit codes, one-line user errors, JSON summaries."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from jobs.cli import app
from tests.jobs.conftest import END
from warehouse.store.local_server import RedisProcess, free_port

runner = CliRunner()


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {"PRESCORE_HOME": str(home), "PRESCORE_DASK_LOCAL": "threads", **extra}


@pytest.mark.parametrize(
    "verb", [[], ["synth"], ["train"], ["score"], ["status"], ["restore"], ["demo"], ["redis", "stop"]]
)
def test_every_verb_has_help(verb: list[str]) -> None:
    result = runner.invoke(app, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_usage_error_exits_2() -> None:
    result = runner.invoke(app, ["score", "--model", "churn"])
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "--entities", "0"], "entities"),
        (["synth", "--days", "-1"], "days"),
        (["synth", "--end-date", "2026-02-30"], "2026-02-30"),
        (["train", "--model", "nope"], "unknown model 'nope'"),
        (["status", "--model", "nope"], "unknown model 'nope'"),
    ],
)
def test_user_errors_exit_1_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args, env=_env(tmp_path))
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_models_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "models.yaml"
    bad.write_text("feature_sets: {fs: {features: {a: {}}}}\nmodels: {m: {feature_set: fs}}\n")
    result = runner.invoke(app, ["status"], env=_env(tmp_path, PRESCORE_MODELS_FILE=str(bad)))
    assert result.exit_code == 1
    assert "models.m.fallback_features: Field required" in result.output


def test_unreachable_catalog_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://u:pw@127.0.0.1:{free_port()}/db"
    result = runner.invoke(app, ["status"], env=_env(tmp_path, PRESCORE_CATALOG_URL=url))
    assert result.exit_code == 1
    assert "cannot reach the catalog database" in result.output
    assert "Traceback" not in result.output and "pw" not in result.output.replace("PRESCORE", "")


def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status"], env=_env(tmp_path, PRESCORE_DASK_WORKERS="0"))
    assert result.exit_code == 1, result.output
    assert "invalid setting: PRESCORE_DASK_WORKERS='0'" in result.output
    assert "Traceback" not in result.output and "pydantic" not in result.output


def test_redis_down_is_one_line_and_exit_3(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["rollback", "--model", "churn"], env=_env(tmp_path, PRESCORE_REDIS_URL=url))
    assert result.exit_code == 3, result.output
    assert "Redis is unavailable while" in result.output and "retry when it answers again" in result.output
    assert "Traceback" not in result.output


def test_wrong_redis_password_is_a_user_error_without_the_password(
    tmp_path: Path, redis_factory: Callable[..., RedisProcess]
) -> None:
    server = redis_factory(password="Right-pw-81c2")
    for url in (f"redis://:Wrong-pw-19af@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
        result = runner.invoke(app, ["rollback", "--model", "churn"], env=_env(tmp_path, PRESCORE_REDIS_URL=url))
        assert result.exit_code == 1, result.output
        assert "Redis refused the credentials" in result.output, result.output
        assert "fix the user and password in PRESCORE_REDIS_URL" in result.output
        assert "pw-" not in result.output and "Traceback" not in result.output


def test_score_and_status_json(trained_template: tuple[Path, Path], tmp_path: Path) -> None:
    """`score --json` prints the run report; `status --json` then lists the committed run."""
    import shutil

    home, models_file = trained_template
    shutil.copytree(home, tmp_path / "home")
    env = _env(tmp_path / "home", PRESCORE_MODELS_FILE=str(models_file))
    result = runner.invoke(app, ["score", "-m", "churn", "-d", END.isoformat(), "--device", "cpu", "--json"], env=env)
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["run"]
    assert run["status"] == "committed" and run["rows_out"] > 0
    try:  # status reads the store: without PRESCORE_REDIS_URL that starts this home's embedded Redis
        status = runner.invoke(app, ["status", "--json"], env=env)
    finally:
        stopped = runner.invoke(app, ["redis", "stop"], env=env)
    assert stopped.exit_code == 0 and "stopped the embedded Redis" in stopped.output, stopped.output
    assert status.exit_code == 0, status.output
    (model,) = json.loads(status.stdout)
    assert model["recent_runs"][0]["run_id"] == run["run_id"]
    assert model["production"]["primary"]["sha256"]
    promise = model["store"]["freshness"]  # nothing published yet: not late, no age; the nightly 02:00 run next
    assert (promise["promise_s"], promise["late"]) == (129_600, None) and promise["next_run_at"].endswith(
        "T02:00:00+00:00"
    )


def test_a_home_the_user_cannot_write_is_one_line_naming_the_path_and_uid(tmp_path: Path) -> None:
    """E.g. a root-owned bind mount: synth stops with the path, the uid and what to do, exit 1, no traceback."""
    from tests.support.other_user import as_other_user, shared_dir

    args = ["synth", "--entities", "1000", "--days", "1"]
    assert runner.invoke(app, args, env=_env(tmp_path / "warm")).exit_code == 0  # imports done before the switch
    with shared_dir() as base:
        home = base / "home"
        home.mkdir(mode=0o555)

        def run() -> tuple[int, str, int]:
            result = runner.invoke(app, args, env=_env(home))
            return result.exit_code, result.output, os.getuid()

        try:
            code, output, uid = as_other_user(run)
        finally:
            home.chmod(0o755)
    assert code == 1, output
    assert f"permission denied: {home}" in output and f"is not accessible to uid {uid}" in output
    assert "chown -R" in output and "Traceback" not in output
