"""Sample data of the store tests: entity ids and scores, and a run loaded (and published) in one call."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from warehouse.store import ScoreStore

MODEL = "churn"
DAY = datetime(2026, 3, 1, tzinfo=UTC)


def ten_digit_ids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    base = 1_000_000_000 + np.arange(n, dtype=np.int64) * 449_000 + rng.integers(0, 449_000, n)
    return [str(x) for x in base.tolist()]


def scores_for(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n, dtype=np.float32)


def load_run(
    store: ScoreStore, run_id: str, ids: list[str], scores: np.ndarray, as_of: datetime = DAY, publish: bool = True
) -> None:
    store.create_run(MODEL, run_id, "v1", as_of, len(ids))
    store.writer(MODEL, run_id).write_batch(ids, scores)
    store.finalize_run(MODEL, run_id)
    if publish:
        store.publish(MODEL, run_id)
