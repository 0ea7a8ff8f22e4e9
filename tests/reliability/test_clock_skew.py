"""Clock skew: a run whose ``as_of`` lies in the future beyond ``MAX_FUTURE_AS_OF_S`` is refused before anything is
written (in ``ScoreStore.create_run``, so ``prescore publish`` refuses it too); within the tolerance it loads."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from tests.conftest import END
from warehouse.errors import StoreError
from warehouse.store import ScoreStore
from warehouse.store.runs import MAX_FUTURE_AS_OF_S

MODEL = "churn"


def test_future_as_of_is_refused_at_create_run(redis_url: str) -> None:
    """10 minutes ahead (tolerance 5): StoreError naming the run, the as_of, the tolerance and what to check; no
    key written. 1 minute ahead (skew within tolerance): accepted."""
    assert MAX_FUTURE_AS_OF_S == 300.0
    with ScoreStore.from_url(redis_url) as store:
        ahead = datetime.now(UTC) + timedelta(minutes=10)
        with pytest.raises(StoreError, match=r"run 'skewed' of model 'churn' has as_of .* in the future") as err:
            store.create_run(MODEL, "skewed", "v1", ahead, 10)
        assert "300s of clock skew" in str(err.value) and "check the clock" in str(err.value)
        assert store.get_run(MODEL, "skewed") is None and store.client.keys("*") == []
        with pytest.raises(StoreError, match="in the future"):  # epoch milliseconds passed as seconds
            store.create_run(MODEL, "millis", "v1", time.time() * 1000, 10)
        info = store.create_run(MODEL, "slight", "v1", datetime.now(UTC) + timedelta(minutes=1), 10)
        assert info.run_id == "slight"


def test_publish_refuses_a_run_scored_with_a_skewed_clock(rt: Runtime, observe: Callable[..., None]) -> None:
    """A committed run whose Parquet as_of is a day ahead (its producer's clock was wrong): ``publish_run`` fails
    with the clear StoreError, the published run stays current, nothing of the skewed run is left in Redis."""
    good = score_partition(rt, MODEL, END - timedelta(days=1), device="cpu")
    publish_run(rt, MODEL, good.run_id)
    skewed = score_partition(rt, MODEL, END, device="cpu")
    future = datetime.now(UTC) + timedelta(days=1)
    for part in sorted(Path(str(skewed.output_path)).glob("part-*.parquet")):
        table = pq.read_table(part)
        column = pa.array([future] * table.num_rows, table.schema.field("as_of").type)
        pq.write_table(table.set_column(table.schema.get_field_index("as_of"), "as_of", column), part)
    assert pc.max(pq.read_table(skewed.output_path, columns=["as_of"]).column("as_of")).as_py() > datetime.now(UTC)
    with pytest.raises(StoreError, match="in the future") as err:
        publish_run(rt, MODEL, skewed.run_id)
    with ScoreStore.from_url(rt.redis_url) as store:
        current = store.current_run(MODEL)
        assert current is not None and current.run_id == good.run_id
        assert store.get_run(MODEL, skewed.run_id) is None
        assert list(store.client.scan_iter(match=f"*{skewed.run_id}*")) == []
    observe("clock_skew", skew_s=86_400, tolerance_s=MAX_FUTURE_AS_OF_S, error=str(err.value),
            current_run_kept=True, keys_of_skewed_run=0)  # fmt: skip
