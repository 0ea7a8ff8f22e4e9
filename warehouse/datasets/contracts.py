"""Feature-set contracts: check a table or a stored partition against its ``FeatureSetSpec``.

What a partition must satisfy (every problem is reported, each with its column and row count):

- ``missing_column``: the entity column, the timestamp column and every contract feature are present.
- ``wrong_dtype``: the entity column is a string (``string`` or ``large_string``); the timestamp column is a
  timestamp in UTC (any unit; time zone ``UTC``/``Etc/UTC``/``+00:00``); each feature has exactly the
  contract dtype (``float32`` is not ``float64``). A numeric feature of the wrong dtype is still checked
  for range and nulls, so one pass finds everything.
- ``out_of_range``: feature values outside ``[min, max]`` (a missing bound is open). NaN and ±inf are
  always out of range, even when the contract sets no bounds. Nulls are not range violations.
- ``too_many_nulls``: null fraction of a feature above its ``max_null_fraction``; the timestamp column
  allows no nulls. For a ``category`` feature with ``unknown: missing``, values outside its ``categories`` are
  scored as missing and count with the nulls.
- ``unknown_category``: a ``category`` feature with ``unknown: reject`` holds values outside its ``categories``
  (the detail names up to five of them). A ``category`` feature is a string column: ``string``,
  ``large_string`` or a dictionary of either.
- ``null_entity`` / ``duplicate_entity``: the entity column has no nulls and no repeated ids (``count`` =
  rows beyond the first occurrence).

Columns that are neither the entity, the timestamp nor a contract feature are allowed and ignored, and
column order is not checked (readers select columns by name).

``Violation.count`` is always a number of rows: for ``missing_column``/``wrong_dtype`` the rows of the
files that lack the column or carry the wrong type. ``validate_partition`` streams the partition one row
group at a time; only the entity column is kept across row groups (for the duplicate check).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from warehouse.datasets.features import parquet_file, partition_dir, partition_files
from warehouse.datasets.storage import StoragePath
from warehouse.errors import ContractViolationError, PartitionUnreadableError
from warehouse.model_config import FeatureSetSpec, FeatureSpec

ViolationKind = Literal[
    "missing_column", "wrong_dtype", "out_of_range", "too_many_nulls", "unknown_category", "null_entity",
    "duplicate_entity",
]  # fmt: skip

_SCHEMA_KINDS = ("missing_column", "wrong_dtype")
_UTC_NAMES = {"utc", "etc/utc", "+00:00", "z", "zulu", "gmt", "etc/gmt"}
_ARROW_DTYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
}


@dataclass(frozen=True)
class Violation:
    """One broken rule: which column, what kind, how many rows, and a human-readable detail."""

    column: str
    kind: ViolationKind
    count: int
    detail: str

    def __str__(self) -> str:
        if self.kind in _SCHEMA_KINDS:
            return f"{self.column} {self.kind}"
        return f"{self.column} {self.kind} ({self.count} rows)"


def summarize(violations: Iterable[Violation]) -> str:
    """``"f03 out_of_range (12 rows), f07 missing_column"``."""
    return ", ".join(str(v) for v in violations)


def _is_utc_timestamp(dtype: pa.DataType) -> bool:
    return pa.types.is_timestamp(dtype) and (dtype.tz or "").lower() in _UTC_NAMES


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype)


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def is_category_type(dtype: pa.DataType) -> bool:
    """What a ``category`` feature may be stored as: a string column or a dictionary of strings."""
    return _is_text(dtype) or (pa.types.is_dictionary(dtype) and _is_text(dtype.value_type))


UNKNOWN_SHOWN = 5


def _fmt(value: float) -> str:
    return f"{value:g}"


@dataclass
class _RangeStats:
    bad: int = 0
    non_finite: int = 0
    low: float = float("inf")
    high: float = float("-inf")


@dataclass
class _Accumulator:
    """Folds schemas and row groups into counters; ``violations()`` turns them into the report."""

    spec: FeatureSetSpec
    rows: int = 0
    schema_issues: dict[tuple[str, ViolationKind], tuple[int, str]] = field(default_factory=dict)
    current_issues: list[tuple[str, ViolationKind]] = field(default_factory=list)
    nulls: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, _RangeStats] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)
    unknown_seen: dict[str, set[str]] = field(default_factory=dict)
    entity_nulls: int = 0
    entity_chunks: list[pa.Array] = field(default_factory=list)

    def _schema_issue(self, column: str, kind: ViolationKind, detail: str) -> None:
        self.schema_issues.setdefault((column, kind), (0, detail))
        self.current_issues.append((column, kind))

    def add_schema(self, schema: pa.Schema) -> list[str]:
        """Start a new file/stream with ``schema``: record its schema problems (counted as rows arrive in
        ``add_values``) and return the columns whose values should be read and checked."""
        self.current_issues = []
        spec = self.spec
        readable: list[str] = []
        names = set(schema.names)

        entity = spec.entity_column
        if entity not in names:
            self._schema_issue(entity, "missing_column", f"entity column {entity!r} is absent")
        else:
            dtype = schema.field(entity).type
            if spec.entity_dtype == "int64":
                if not pa.types.is_integer(dtype):
                    self._schema_issue(entity, "wrong_dtype", f"{entity} is {dtype}, contract says int64")
            elif not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype)):
                self._schema_issue(entity, "wrong_dtype", f"{entity} is {dtype}, contract says string")
            readable.append(entity)

        stamp = spec.timestamp_column
        if stamp not in names:
            self._schema_issue(stamp, "missing_column", f"timestamp column {stamp!r} is absent")
        else:
            dtype = schema.field(stamp).type
            if not _is_utc_timestamp(dtype):
                self._schema_issue(stamp, "wrong_dtype", f"{stamp} is {dtype}, contract says timestamp with tz=UTC")
            readable.append(stamp)

        for name, feature in spec.features.items():
            if name not in names:
                self._schema_issue(name, "missing_column", f"feature {name!r} ({feature.dtype}) is absent")
                continue
            dtype = schema.field(name).type
            if feature.dtype == "category":
                if not is_category_type(dtype):
                    self._schema_issue(name, "wrong_dtype", f"{name} is {dtype}, contract says category (strings)")
                    continue
            elif dtype != _ARROW_DTYPES[feature.dtype]:
                self._schema_issue(name, "wrong_dtype", f"{name} is {dtype}, contract says {feature.dtype}")
            readable.append(name)
        return readable

    def add_values(self, table: pa.Table | pa.RecordBatch) -> None:
        """Count nulls, range breaks and entity ids in one row group (columns from ``add_schema``)."""
        spec = self.spec
        self.rows += table.num_rows
        for key in self.current_issues:
            count, detail = self.schema_issues[key]
            self.schema_issues[key] = (count + table.num_rows, detail)
        names = set(table.schema.names)
        if spec.entity_column in names:
            column = table.column(spec.entity_column)
            self.entity_nulls += column.null_count
            chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
            self.entity_chunks.extend(chunks)
        if spec.timestamp_column in names:
            column = table.column(spec.timestamp_column)
            self.nulls[spec.timestamp_column] = self.nulls.get(spec.timestamp_column, 0) + column.null_count
        for name, feature in spec.features.items():
            if name not in names:
                continue
            column = table.column(name)
            self.nulls[name] = self.nulls.get(name, 0) + column.null_count
            if _is_numeric(column.type):
                chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
                stats = self.ranges.setdefault(name, _RangeStats())
                for chunk in chunks:
                    _count_out_of_range(chunk, feature, stats)
            elif feature.dtype == "category" and feature.categories is not None:
                self._count_unknown(name, column, feature.categories)

    def _count_unknown(self, name: str, column: pa.ChunkedArray | pa.Array, categories: list[str]) -> None:
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        allowed = pa.array(categories, pa.string())
        for chunk in chunks:
            text = chunk.cast(pa.string()) if pa.types.is_dictionary(chunk.type) else chunk
            outside = pc.and_(pc.is_valid(text), pc.invert(pc.is_in(text, value_set=allowed)))
            count = pc.sum(outside).as_py() or 0
            if not count:
                continue
            self.unknown[name] = self.unknown.get(name, 0) + count
            seen = self.unknown_seen.setdefault(name, set())
            if len(seen) < UNKNOWN_SHOWN:
                values = pc.unique(text.filter(outside)).to_pylist()
                seen.update(sorted(values)[: UNKNOWN_SHOWN - len(seen)])

    def violations(self) -> list[Violation]:
        spec = self.spec
        found: list[Violation] = []
        for (column, kind), (count, detail) in self.schema_issues.items():
            found.append(Violation(column, kind, count, detail))

        if self.entity_nulls:
            found.append(
                Violation(
                    spec.entity_column,
                    "null_entity",
                    self.entity_nulls,
                    f"{self.entity_nulls} rows have a null {spec.entity_column}",
                )
            )
        if self.entity_chunks:
            chunks = self.entity_chunks
            if len({chunk.type for chunk in chunks}) > 1:  # e.g. string in one file, large_string in another
                chunks = [chunk.cast(pa.large_string()) for chunk in chunks]
            ids = pa.chunked_array(chunks)
            non_null = len(ids) - ids.null_count
            distinct = pc.count_distinct(ids, mode="only_valid").as_py() if non_null else 0
            duplicates = non_null - distinct
            if duplicates:
                found.append(
                    Violation(
                        spec.entity_column,
                        "duplicate_entity",
                        duplicates,
                        f"{duplicates} rows repeat an earlier {spec.entity_column} ({distinct} distinct ids)",
                    )
                )

        stamp_nulls = self.nulls.get(spec.timestamp_column, 0)
        if stamp_nulls:
            found.append(
                Violation(
                    spec.timestamp_column,
                    "too_many_nulls",
                    stamp_nulls,
                    f"{stamp_nulls} rows have a null {spec.timestamp_column}; none are allowed",
                )
            )

        for name, feature in spec.features.items():
            stats = self.ranges.get(name)
            if stats is not None and stats.bad:
                bounds = (
                    f"[{_fmt(feature.min) if feature.min is not None else '-inf'}, "
                    f"{_fmt(feature.max) if feature.max is not None else 'inf'}]"
                )
                seen = (
                    f"; offending values span {_fmt(stats.low)}..{_fmt(stats.high)}" if stats.low <= stats.high else ""
                )
                nan = f" ({stats.non_finite} NaN/inf)" if stats.non_finite else ""
                found.append(
                    Violation(name, "out_of_range", stats.bad, f"{stats.bad} values outside {bounds}{nan}{seen}")
                )
            unknown = self.unknown.get(name, 0)
            shown = ", ".join(repr(v) for v in sorted(self.unknown_seen.get(name, ())))
            if unknown and feature.unknown == "reject":
                found.append(
                    Violation(
                        name,
                        "unknown_category",
                        unknown,
                        f"{unknown} values outside the contract's categories (e.g. {shown}); allowed: "
                        f"{_allowed(feature.categories or [])}; add them to categories or set unknown: missing",
                    )
                )
            nulls = self.nulls.get(name, 0)
            missing = nulls + (unknown if feature.unknown == "missing" else 0)
            if missing and self.rows:
                fraction = missing / self.rows
                if fraction > feature.max_null_fraction:
                    why = f"; {unknown} unknown categories ({shown}) count as missing" if missing != nulls else ""
                    found.append(
                        Violation(
                            name,
                            "too_many_nulls",
                            missing,
                            f"{fraction:.2%} of rows are null ({missing}/{self.rows}{why}); "
                            f"allowed {feature.max_null_fraction:.2%}",
                        )
                    )
        return found


def _allowed(categories: list[str]) -> str:
    head = ", ".join(repr(c) for c in categories[:10])
    return f"[{head}{f', … {len(categories) - 10} more' if len(categories) > 10 else ''}]"


def _count_out_of_range(array: pa.Array, feature: FeatureSpec, stats: _RangeStats) -> None:
    if len(array) == 0 or array.null_count == len(array):
        return
    if array.null_count:
        # nulls are not range violations: fill them with a value that passes every check
        filler = feature.min if feature.min is not None else (feature.max if feature.max is not None else 0)
        array = pc.fill_null(array, pa.scalar(filler).cast(array.type, safe=False))
    values = array.to_numpy(zero_copy_only=False)
    floating = values.dtype.kind == "f"
    ok = np.isfinite(values) if floating else np.ones(len(values), dtype=bool)
    if feature.min is not None:
        ok &= values >= feature.min
    if feature.max is not None:
        ok &= values <= feature.max
    bad = len(values) - int(np.count_nonzero(ok))
    if not bad:
        return
    stats.bad += bad
    offending = values[~ok]
    if floating:
        stats.non_finite += int(np.count_nonzero(~np.isfinite(offending)))
        offending = offending[np.isfinite(offending)]
    if len(offending):
        stats.low = min(stats.low, float(offending.min()))
        stats.high = max(stats.high, float(offending.max()))


def validate(table: pa.Table | pa.RecordBatch, spec: FeatureSetSpec) -> list[Violation]:
    """Every contract violation of an in-memory table ([] when it conforms)."""
    return validate_batches(table.schema, [table], spec)


def validate_batches(
    schema: pa.Schema, batches: Iterable[pa.Table | pa.RecordBatch], spec: FeatureSetSpec
) -> list[Violation]:
    """Every contract violation of a stream of tables/batches sharing ``schema`` (one pass, bounded memory)."""
    acc = _Accumulator(spec)
    acc.add_schema(schema)
    for batch in batches:
        acc.add_values(batch)
    return acc.violations()


def validate_partition(
    root: StoragePath | str, feature_set: str, day: dt.date, spec: FeatureSetSpec
) -> list[Violation]:
    """Every contract violation of a stored feature partition, read one row group at a time.

    Raises ``PartitionNotFoundError`` (naming the path) when the partition is missing or incomplete, and
    ``PartitionUnreadableError`` (naming the file) when one of its files is not readable Parquet.
    """
    files = partition_files(root, feature_set, day, spec)
    return validate_files(
        files, spec, f"the partition {_where(root, feature_set, day, spec)} (e.g. with `prescore synth`)"
    )


def validate_files(files: Iterable[StoragePath], spec: FeatureSetSpec, rewrite: str) -> list[Violation]:
    """Every contract violation of ``files`` taken as one dataset (a partition, a delta drop), one row group at a
    time. ``PartitionUnreadableError`` names the file that is not readable Parquet and says to rewrite ``rewrite``."""
    acc = _Accumulator(spec)
    for path in files:
        try:
            with parquet_file(path) as handle:
                columns = acc.add_schema(handle.schema_arrow)
                for group in range(handle.num_row_groups):
                    acc.add_values(handle.read_row_group(group, columns=columns))
        except pa.ArrowInvalid as exc:  # a bad footer or page; I/O errors (OSError) stay what they are
            raise PartitionUnreadableError(
                f"feature file {path} is not readable Parquet ({exc}); rewrite {rewrite}"
            ) from exc
    return acc.violations()


def _where(root: StoragePath | str, feature_set: str, day: dt.date, spec: FeatureSetSpec | None = None) -> str:
    if spec is not None and spec.path:
        return str(partition_dir(root, feature_set, day, spec))
    return f"features/{feature_set}/{partition_dir(root, feature_set, day).name}"


def require_valid(root: StoragePath | str, feature_set: str, day: dt.date, spec: FeatureSetSpec) -> None:
    """Raise ``ContractViolationError`` (listing every violation) unless the partition conforms."""
    violations = validate_partition(root, feature_set, day, spec)
    if violations:
        raise ContractViolationError(
            f"partition {_where(root, feature_set, day, spec)} breaks its contract: {summarize(violations)}",
            list(violations),
        )


def require_valid_table(table: pa.Table, spec: FeatureSetSpec, where: str = "table") -> None:
    """Raise ``ContractViolationError`` (listing every violation) unless ``table`` conforms."""
    violations = validate(table, spec)
    if violations:
        raise ContractViolationError(f"{where} breaks its contract: {summarize(violations)}", list(violations))
