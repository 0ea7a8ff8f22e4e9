"""`prescore demo` end to end on embedded defaults (a smaller warehouse and model shape, same steps)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.demo import run_demo
from tests.jobs.conftest import small_models_file
from warehouse.score_store import ScoreReader


def test_demo_runs_every_step_and_serves_scores(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRESCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PRESCORE_REDIS_URL", redis_url)
    monkeypatch.setenv("PRESCORE_DASK_LOCAL", "threads")
    monkeypatch.setenv("PRESCORE_MODELS_FILE", str(small_models_file(tmp_path / "models.yaml")))
    lines: list[str] = []
    result = run_demo(entities=20_000, days=4, say=lines.append)
    assert [line[:5] for line in lines if line.startswith("[")] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    reader = ScoreReader.from_url(redis_url)
    try:
        hits = reader.get_many("churn", result["ids"])  # type: ignore[arg-type]
    finally:
        reader.close()
    assert all(h is not None and h.run_id == result["run_id"] for h in hits)
    assert any("miss" in line for line in lines)  # the never-seen entity
