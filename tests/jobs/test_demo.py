"""`prescore demo` end to end on embedded defaults (a smaller warehouse and model shape, same steps): the nightly
DAG through Airflow, the API started on 127.0.0.1, and the three rungs of the ladder looked up over HTTP."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from jobs.demo import run_demo
from jobs.serve import http_json, running_server, stop_detached
from tests.jobs.conftest import small_models_file
from warehouse.store import ScoreReader
from warehouse.store.local_server import free_port

# find_spec, not importorskip: importing Airflow here would read (and create) ~/airflow
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None, reason="the demo runs the nightly DAG through Airflow (extra airflow)"
)


def test_demo_runs_every_step_and_serves_scores(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("PRESCORE_HOME", str(home))
    monkeypatch.setenv("PRESCORE_REDIS_URL", redis_url)
    monkeypatch.setenv("PRESCORE_MODELS_FILE", str(small_models_file(tmp_path / "models.yaml")))
    for key in [k for k in os.environ if k.startswith("AIRFLOW")]:
        monkeypatch.delenv(key)  # the demo's Airflow home is its own, under PRESCORE_HOME
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # ... and never ~/airflow
    lines: list[str] = []
    try:
        result = run_demo(entities=20_000, days=4, say=lines.append, port=free_port())
        assert [line[:5] for line in lines if line.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
        assert "Airflow" in next(line for line in lines if line.startswith("[3/5]"))
        assert (home / "airflow" / "airflow.db").exists()  # a private metadata DB
        assert not (tmp_path / "user" / "airflow").exists()

        reader = ScoreReader.from_url(redis_url)
        try:
            current = reader.current_run("churn")
            hits = reader.get_many("churn", result["ids"])
        finally:
            reader.close()
        assert current is not None and current.run_id == result["run_id"]  # the DAG published it
        assert all(h is not None and h.run_id == result["run_id"] for h in hits)

        precomputed, fallback, default = result["lookups"]
        assert (precomputed["source"], precomputed["run_id"]) == ("precomputed", result["run_id"])
        assert precomputed["score"] == pytest.approx(hits[0].score)  # type: ignore[union-attr]
        assert (fallback["source"], fallback["fallback_used"]) == ("fallback", True)
        assert default["source"] == "default"
        assert any("/docs" in line and "/metrics" in line for line in lines)
        assert lines[-1].endswith(result["report"]) and "monitoring report" in lines[-1]  # it ends on the report
        page = Path(result["report"]).read_text()
        assert "feature-drift" in page and "Realized quality" in page
        assert http_json("GET", result["api"] + "/readyz")[0] == 200  # still serving after the demo returns
    finally:
        info = running_server(home)
        stop_detached(home)
    assert info is not None
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
