"""Property tests (hypothesis, small example counts) of the bucket layout, the staleness ladder and the contracts.

- Every written entity is read back exactly (float32 bit for bit, from the right run) through the real test Redis,
  for ids of 1-128 UTF-8 bytes in any script, through the pipelined HSET batches of the writer.
- ``bucket_of`` is CRC-32 modulo the bucket count, equal to the vectorised ``buckets``, and the same in another
  interpreter with another hash seed.
- ``online.policy.decide``: the rung follows the documented ladder, and an older score never gets a better rung.
- Contracts: random bad values in a random feature are reported under that feature's name, with the right count,
  by ``warehouse.datasets.contracts`` and by the online input check.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from online.errors import InvalidInput
from online.policy import Rung, Source, decide
from online.snapshot import ModelRuntime
from online.validation import check_features
from warehouse.datasets.contracts import require_valid_table, validate
from warehouse.errors import ContractViolationError
from warehouse.model_config import FeatureSetSpec, FeatureSpec, load_config
from warehouse.settings import DEFAULT_MODELS_FILE
from warehouse.store import ScoreReader, ScoreStore
from warehouse.store.ids import MAX_ENTITY_ID_BYTES, bucket_of, buckets, crc32s, id_array
from warehouse.store.keys import encode_score

MODEL = "churn"
ROOT = Path(__file__).resolve().parents[2]
FAST = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
WITH_FIXTURES = settings(FAST, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Any character the store accepts: no surrogates (not encodable), no control characters (C0, DEL, C1 = Cc).
CHARS = st.characters(exclude_categories=("Cs", "Cc"))


def _fit(chars: list[str]) -> str:
    """The longest prefix of ``chars`` that fits in ``MAX_ENTITY_ID_BYTES`` UTF-8 bytes (so the limit is hit often)."""
    out, size = [], 0
    for ch in chars:
        size += len(ch.encode())
        if size > MAX_ENTITY_ID_BYTES:
            break
        out.append(ch)
    return "".join(out)


ENTITY_IDS = st.lists(CHARS, min_size=1, max_size=MAX_ENTITY_ID_BYTES).map(_fit)


SCORES = st.floats(width=32, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------- write → read back through the real Redis


@WITH_FIXTURES
@given(
    ids=st.lists(ENTITY_IDS, min_size=1, max_size=60, unique=True),
    data=st.data(),
    filler=st.integers(min_value=0, max_value=3_000),
)
def test_every_written_entity_is_read_back_exactly(
    redis_url: str, ids: list[str], data: st.DataObject, filler: int
) -> None:
    """``filler`` other ids are written with them, so the run has 1 to ~50 buckets."""
    scores = np.array(data.draw(st.lists(SCORES, min_size=len(ids), max_size=len(ids))), dtype=np.float32)
    taken = set(ids)
    extra = [f for f in (f"filler-{i}" for i in range(filler + len(ids))) if f not in taken][:filler]
    all_ids, all_scores = [*ids, *extra], np.concatenate([scores, np.full(len(extra), 0.5, np.float32)])
    run_id = f"prop-{next(_RUNS)}"
    with ScoreStore.from_url(redis_url) as store:
        store.create_run(MODEL, run_id, "v1", datetime.now(UTC) - timedelta(hours=1), len(all_ids))
        added = store.writer(MODEL, run_id).write_batch(all_ids, all_scores)
        assert added == len(all_ids)
        store.finalize_run(MODEL, run_id)
        store.publish(MODEL, run_id, force=True)
    reader = ScoreReader.from_url(redis_url, socket_timeout=5.0)  # new: reads this example's pointer
    try:
        hits = reader.get_many(MODEL, [*ids, _absent(taken)])
        single = reader.get(MODEL, ids[-1])
    finally:
        reader.close()
    assert hits[-1] is None
    for entity, want, hit in zip(ids, scores.tolist(), hits[:-1], strict=True):
        assert hit is not None, entity
        assert hit.run_id == run_id and encode_score(hit.score) == encode_score(want), entity
    assert single is not None and encode_score(single.score) == encode_score(float(scores[-1]))


_RUNS = itertools.count(1)


def _absent(taken: set[str]) -> str:
    return next(f"absent-{i}" for i in itertools.count() if f"absent-{i}" not in taken)


# ---------------------------------------------------------------- bucket_of, here and in another interpreter


def test_bucket_of_is_stable_across_processes() -> None:
    cases: list[tuple[str, int, int]] = []

    @FAST
    @given(ids=st.lists(ENTITY_IDS, min_size=1, max_size=20), n=st.integers(min_value=1, max_value=1 << 20))
    def collect(ids: list[str], n: int) -> None:
        raw = [e.encode() for e in ids]
        scalar = [bucket_of(r, n) for r in raw]
        assert scalar == [zlib.crc32(r) % n for r in raw]  # the documented function
        assert buckets(id_array(ids), n).tolist() == scalar  # the vectorised path agrees
        cases.extend((e, n, b) for e, b in zip(ids, scalar, strict=True))

    collect()
    code = (
        "import json, sys\nfrom warehouse.store.ids import bucket_of\n"
        "print(json.dumps([bucket_of(e.encode(), n) for e, n in json.load(sys.stdin)]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "4242", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([(e, n) for e, n, _ in cases]),
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=True)  # fmt: skip
    assert json.loads(out.stdout) == [b for _, _, b in cases]


# ---------------------------------------- mixed-length batches (a fixed bug of the vectorised CRC-32)


def test_crc32s_agrees_with_zlib_on_a_mixed_length_batch() -> None:
    ids = ["abc", "abcd", "a", "abcd", "abc"]  # 3 + 4 + 1 + 4 + 3 = 15 = 3 x 5 bytes
    assert crc32s(id_array(ids)).tolist() == [zlib.crc32(e.encode()) for e in ids]


def test_mixed_length_batch_is_read_back(redis_url: str) -> None:
    """200 five-byte ids, one of them replaced by a 1-byte and one by a 9-byte id (same total): every id must be
    served after write_batch, finalize_run and publish."""
    ids = [f"id{i:03d}" for i in range(200)]
    ids[10], ids[11] = "x", "id0000009"
    with ScoreStore.from_url(redis_url) as store:
        store.create_run(MODEL, "mixed", "v1", datetime.now(UTC) - timedelta(hours=1), len(ids))
        store.writer(MODEL, "mixed").write_batch(ids, np.full(len(ids), 0.5, np.float32))
        store.finalize_run(MODEL, "mixed")
        store.publish(MODEL, "mixed")
    reader = ScoreReader.from_url(redis_url)
    try:
        missing = [e for e, hit in zip(ids, reader.get_many(MODEL, ids), strict=True) if hit is None]
    finally:
        reader.close()
    assert missing == []


# ---------------------------------------------------------------- the staleness ladder

AGES = st.floats(min_value=-1e6, max_value=1e8, allow_nan=False)
RANK = {Rung.FRESH: 0, Rung.FALLBACK_STALE: 1, Rung.STALE: 1, Rung.DEFAULT_EXPIRED: 2}


@FAST
@given(
    age=AGES,
    older_by=st.floats(min_value=0, max_value=1e8),
    max_age=st.floats(min_value=0, max_value=1e7),
    extra=st.floats(min_value=0, max_value=1e7),
    can_fallback=st.booleans(),
    hit=st.booleans(),
)
def test_ladder_invariants(
    age: float, older_by: float, max_age: float, extra: float, can_fallback: bool, hit: bool
) -> None:
    now, hard, as_of = 1.8e9, max_age + extra, 1.8e9 - age
    d = decide(as_of if hit else None, now, max_age, hard, can_fallback)
    if not hit:
        assert d.age_s is None and not d.stale
        assert d.source is (Source.FALLBACK if can_fallback else Source.DEFAULT)
        return
    assert d.age_s is not None and d.age_s >= 0 and d.age_s == max(0.0, now - as_of)  # future as_of (skew) → age 0
    if d.age_s <= max_age:
        assert (d.source, d.rung, d.stale) == (Source.PRECOMPUTED, Rung.FRESH, False)
    elif can_fallback:
        assert (d.source, d.stale) == (Source.FALLBACK, False)
    elif d.age_s <= hard:
        assert (d.source, d.rung, d.stale) == (Source.PRECOMPUTED, Rung.STALE, True)
    else:
        assert (d.source, d.stale) == (Source.DEFAULT, False)
    assert d.stale == (d.rung is Rung.STALE)  # only a served stale score is flagged
    assert d.source is not Source.FALLBACK or can_fallback
    older = decide(as_of - older_by, now, max_age, hard, can_fallback)
    assert RANK[older.rung] >= RANK[d.rung]  # an older score never gets a better rung


# ---------------------------------------------------------------- contracts name the field

SPEC = FeatureSetSpec(
    features={
        "f00": FeatureSpec(dtype="float32", min=-10, max=10),
        "f01": FeatureSpec(dtype="float32", min=0, max=1),
        "amount": FeatureSpec(dtype="float64", min=0, max=1e6),
        "count": FeatureSpec(dtype="int64", min=0, max=100),
    }
)
ROWS = 40


def _bad_value(spec: FeatureSpec) -> st.SearchStrategy[float]:
    assert spec.min is not None and spec.max is not None
    below = st.floats(max_value=spec.min, exclude_max=True, allow_nan=False, allow_infinity=False, width=32)
    above = st.floats(min_value=spec.max, exclude_min=True, allow_nan=False, allow_infinity=False, width=32)
    if spec.dtype.startswith("int"):
        return st.one_of(st.integers(max_value=int(spec.min) - 1, min_value=-(2**40)),
                         st.integers(min_value=int(spec.max) + 1, max_value=2**40))  # fmt: skip
    return st.one_of(below, above, st.sampled_from([math.nan, math.inf, -math.inf]))


def _good_table() -> dict[str, list[Any]]:
    return {
        "entity_id": [f"{i:010d}" for i in range(ROWS)],
        "as_of": [datetime(2026, 11, 20, 23, 59, 59, tzinfo=UTC)] * ROWS,
        "f00": [0.5] * ROWS,
        "f01": [0.5] * ROWS,
        "amount": [10.0] * ROWS,
        "count": [3] * ROWS,
    }


TYPES = {"f00": pa.float32(), "f01": pa.float32(), "amount": pa.float64(), "count": pa.int64()}


@FAST
@given(data=st.data(), column=st.sampled_from(sorted(SPEC.features)))
def test_contract_names_the_field_of_random_bad_values(data: st.DataObject, column: str) -> None:
    rows = data.draw(st.sets(st.integers(min_value=0, max_value=ROWS - 1), min_size=1, max_size=ROWS))
    values = _good_table()
    for row in rows:
        values[column][row] = data.draw(_bad_value(SPEC.features[column]))
    arrays = {name: pa.array(v, TYPES.get(name)) for name, v in values.items() if name != "as_of"}
    arrays["as_of"] = pa.array(values["as_of"], pa.timestamp("us", tz="UTC"))
    table = pa.table(arrays)
    violations = validate(table, SPEC)
    assert [(v.column, v.kind, v.count) for v in violations] == [(column, "out_of_range", len(rows))]
    with pytest.raises(ContractViolationError, match=rf"\b{column} out_of_range \({len(rows)} rows\)"):
        require_valid_table(table, SPEC)


def _churn_runtime() -> ModelRuntime:
    config = load_config(DEFAULT_MODELS_FILE)
    spec = config.model(MODEL)
    fs = config.feature_set(spec.feature_set)
    bounds = {}
    for f in spec.fallback_features:
        lo, hi = fs.features[f].min, fs.features[f].max
        bounds[f] = (-math.inf if lo is None else lo, math.inf if hi is None else hi)
    return ModelRuntime(MODEL, spec, "p", None, "", bounds, ())


CHURN = _churn_runtime()
JSON_BAD = st.one_of(
    st.floats(min_value=1000, exclude_min=True),
    st.floats(max_value=-1000, exclude_max=True),
    st.just(math.nan),
    st.text(max_size=5),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)


@FAST
@given(name=st.sampled_from(list(CHURN.spec.fallback_features)), bad=JSON_BAD)
def test_online_features_check_names_the_field(name: str, bad: object) -> None:
    features: dict[str, object] = dict.fromkeys(CHURN.spec.fallback_features, 1.0)
    features[name] = bad
    with pytest.raises(InvalidInput) as err:
        check_features(CHURN, features)
    assert err.value.field == f"features.{name}" and err.value.message.startswith(f"features.{name}: ")
