"""Data profiles: what a model version's data looked like (its baseline) and how a later partition differs (drift).

No I/O: callers read Arrow tables and pass them in, chunk by chunk (``ProfileBuilder.add``), so a partition of any
size is profiled in bounded memory.

A profile holds, per feature:

- ``numeric`` (float, integer and bool features): the row and null counts (a null or a NaN: what xgboost sees as
  missing) and the quantile summary of the other values (``jobs.scoring.quantile_summary``, chunks merged with
  ``merge_summaries``);
- ``category`` (``dtype: category`` in the contract, or a feature the model codes as one): row and null counts,
  the count of each value (at most ``MAX_TRACKED`` distinct values, the rest counted under ``OTHER``) and
  ``known``, the values the model knows (its manifest's code order, else the contract's ``categories``; None when
  neither lists them).

A baseline (``baseline``) is a profile plus the score distribution the version gave on the same rows and where the
rows came from (``source``: ``training``, the training sample of ``prescore train``; ``reference``, the reference
partition of ``prescore register``). It is stored with the version (``warehouse.registry``: ``baseline.json``).

``drift(baseline, profile)`` compares a partition's profile with a baseline, per feature: the PSI
(``jobs.scoring.psi_of_summaries`` over the baseline's deciles for numeric features; ``jobs.scoring.psi`` over the
baseline's values, plus one bin for every other value, for category features), the null rate and its change, and
for category features the share of non-null values the model does not know (``unknown_share``). A feature is
``drifted`` when its PSI exceeds ``PSI_ALERT``, its null rate rose by more than ``NULL_RATE_ALERT`` or its unknown
share by more than ``UNKNOWN_ALERT``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jobs import scoring
from warehouse.datasets.contracts import is_category_type

FORMAT = 1
OTHER = "__other__"  # the values of a category feature beyond the MAX_TRACKED most frequent ones
MAX_TRACKED = 1000
PSI_ALERT = 0.25  # "a significant shift" (jobs.scoring)
NULL_RATE_ALERT = 0.05  # an absolute rise of the null rate
UNKNOWN_ALERT = 0.01  # an absolute rise of the share of unknown category values


class ProfileBuilder:
    """Accumulates the profile of ``features`` over chunks; ``categories`` maps each category feature to the values
    the model knows (None: not listed)."""

    def __init__(self, features: Sequence[str], categories: Mapping[str, Sequence[str] | None]) -> None:
        self.features = list(features)
        self.categories = {k: (None if v is None else list(v)) for k, v in categories.items()}
        self.rows = 0
        self._nulls = dict.fromkeys(self.features, 0)
        self._parts: dict[str, list[tuple[int, list[float]]]] = {f: [] for f in self.features}
        self._counts: dict[str, Counter[str]] = {f: Counter() for f in self.categories}

    def add(self, table: pa.Table) -> None:
        """Profile one chunk (its columns must include ``features``)."""
        self.rows += table.num_rows
        for name in self.features:
            column = table.column(name)
            if name in self.categories:
                if not is_category_type(column.type) or pa.types.is_dictionary(column.type):
                    column = column.cast(pa.string())
                self._nulls[name] += column.null_count
                counts = pc.value_counts(column.drop_null()).to_pylist() if len(column) else []
                for item in counts:
                    self._counts[name][str(item["values"])] += int(item["counts"])
                continue
            if not pa.types.is_floating(column.type):
                column = column.cast(pa.float64())
            values = column.drop_null().to_numpy().astype(np.float64) if len(column) else np.empty(0)
            finite = values[np.isfinite(values)]
            self._nulls[name] += column.null_count + (len(values) - len(finite))
            if len(finite):
                self._parts[name].append((len(finite), scoring.quantile_summary(finite)))

    def profile(self) -> dict[str, dict[str, Any]]:
        """The profile of every feature (module docstring)."""
        out: dict[str, dict[str, Any]] = {}
        for name in self.features:
            nulls = self._nulls[name]
            entry: dict[str, Any] = {"rows": self.rows, "nulls": nulls,
                                     "null_rate": round(nulls / self.rows, 6) if self.rows else None}  # fmt: skip
            if name in self.categories:
                counts = self._counts[name]
                top = dict(counts.most_common(MAX_TRACKED))
                rest = sum(counts.values()) - sum(top.values())
                if rest:
                    top[OTHER] = top.get(OTHER, 0) + rest
                entry.update(kind="category", counts=top, known=self.categories[name])
            else:
                entry.update(kind="numeric", quantiles=scoring.merge_summaries(self._parts[name]))
            out[name] = entry
        return out


def baseline(features: dict[str, dict[str, Any]], scores: np.ndarray, source: dict[str, Any]) -> dict[str, Any]:
    """The baseline document of a version: ``features`` (``ProfileBuilder.profile``), the quantile summary of
    ``scores`` (the version's predictions on the same rows) and ``source`` (where the rows came from)."""
    values = np.asarray(scores, dtype=np.float64)
    return {
        "format": FORMAT,
        "source": source,
        "features": features,
        "score": {"rows": len(values), "quantiles": scoring.quantile_summary(values)},
    }


def _unknown_share(entry: Mapping[str, Any]) -> float | None:
    known = entry.get("known")
    counts: Mapping[str, int] = entry.get("counts") or {}
    total = sum(counts.values())
    if known is None or not total:
        return None
    known_set = set(known)
    return sum(n for v, n in counts.items() if v not in known_set) / total


def _category_psi(reference: Mapping[str, int], actual: Mapping[str, int]) -> float | None:
    values = sorted(reference)
    if not values or not sum(actual.values()):
        return None
    expected = [int(reference[v]) for v in values] + [0]
    seen = [int(actual.get(v, 0)) for v in values]
    seen.append(sum(n for v, n in actual.items() if v not in reference))
    return scoring.psi(expected, seen)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def feature_drift(reference: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The drift of one feature's profile ``actual`` from its baseline profile ``reference`` (module docstring)."""
    kind = reference.get("kind", "numeric")
    if kind == "category":
        psi = _category_psi(reference.get("counts") or {}, actual.get("counts") or {})
        unknown, base_unknown = _unknown_share(actual), _unknown_share(reference)
    else:
        ref_q, act_q = reference.get("quantiles") or [], actual.get("quantiles") or []
        psi = scoring.psi_of_summaries(ref_q, act_q) if ref_q and act_q else None
        unknown = base_unknown = None
    null_rate, base_null = actual.get("null_rate"), reference.get("null_rate")
    change = None if null_rate is None or base_null is None else null_rate - base_null
    reasons = []
    if psi is not None and psi > PSI_ALERT:
        reasons.append(f"psi {psi:.3f} > {PSI_ALERT}")
    if change is not None and change > NULL_RATE_ALERT:
        reasons.append(f"null rate up {change:.3f}")
    if unknown is not None and unknown - (base_unknown or 0.0) > UNKNOWN_ALERT:
        reasons.append(f"unknown categories {unknown:.3f}")
    return {
        "kind": kind,
        "psi": _rounded(psi),
        "null_rate": _rounded(null_rate),
        "baseline_null_rate": _rounded(base_null),
        "null_rate_change": _rounded(change),
        "unknown_share": _rounded(unknown),
        "baseline_unknown_share": _rounded(base_unknown),
        "drifted": bool(reasons),
        "reasons": reasons,
    }


def drift(reference: Mapping[str, Any], actual: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``feature_drift`` of every feature of the baseline ``reference`` that ``actual`` profiles."""
    features: Mapping[str, Any] = reference.get("features") or {}
    return {name: feature_drift(entry, actual[name]) for name, entry in features.items() if name in actual}
