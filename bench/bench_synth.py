"""Synthetic-warehouse throughput against a same-run bare Parquet write of the same data.

    python bench/bench_synth.py --rows 10000000 --json out.json

Steps, all in one temporary directory (deleted afterwards):

1. warm-up: a tiny ``synth`` (pyarrow's compute registry costs ~2 s on its first call on this machine);
2. ``synth`` of ``--rows`` rows (``rows / days`` entities × ``--days`` days); peak RSS is read right after;
3. baseline: the first row group of what synth wrote (already generated: real ids, timestamps and float32
   features) is written again and again with the same writer settings (snappy, dictionary only for the
   timestamp and the label, one row group per chunk, same files per day) until the same number of rows is written —
   once features only (the bare float32 table write), once features + labels (synth's whole I/O).

The headline figure is a ratio, synth rows/s ÷ bare-write rows/s, because absolute speeds on a shared
2-core machine move by ±25 % from run to run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.synth import COMPRESSION, synth

END = dt.date(2026, 11, 20)


def _bare_write(directory: Path, table: pa.Table, labels: pa.Table | None, rows: int, rows_per_file: int) -> float:
    """Write ``table`` (and ``labels``) repeatedly until ``rows`` rows; return the seconds it took."""
    directory.mkdir(parents=True)
    chunk = table.num_rows
    started = time.perf_counter()
    written = part = 0
    while written < rows:
        in_file = 0
        with contextlib.ExitStack() as stack:
            name = f"part-{part:05d}.parquet"
            writer = stack.enter_context(
                pq.ParquetWriter(directory / name, table.schema, compression=COMPRESSION, use_dictionary=["as_of"])
            )
            label_writer = (
                stack.enter_context(
                    pq.ParquetWriter(
                        directory / f"labels-{name}",
                        labels.schema,
                        compression=COMPRESSION,
                        use_dictionary=["label"],
                    )
                )
                if labels is not None
                else None
            )
            while written < rows and in_file < rows_per_file:
                n = min(chunk, rows - written)
                writer.write_table(table.slice(0, n), row_group_size=n)
                if labels is not None and label_writer is not None:
                    label_writer.write_table(labels.slice(0, n), row_group_size=n)
                written += n
                in_file += n
        part += 1
    return time.perf_counter() - started


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="total rows (entities × days)")
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-file", type=int, default=2_000_000)
    parser.add_argument("--prefetch", action="store_true", help="generate the next chunk in a helper thread")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="where to write (default: system temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    entities = args.rows // args.days
    rows = entities * args.days

    with tempfile.TemporaryDirectory(prefix="bench-synth-", dir=args.tmp_dir) as tmp:
        root = Path(tmp)
        synth(root / "warmup", entities=1_000, days=1, end_date=END)
        rss_before = _peak_rss_mib()
        report = synth(
            root / "synth",
            entities=entities,
            days=args.days,
            end_date=END,
            chunk_rows=args.chunk_rows,
            rows_per_file=args.rows_per_file,
            prefetch=args.prefetch,
        )
        rss_synth = _peak_rss_mib()
        first = sorted(report.paths[0].glob("*.parquet"))[0]
        with pq.ParquetFile(first) as handle:
            table = handle.read_row_group(0)
        with pq.ParquetFile(sorted(report.label_paths[0].glob("*.parquet"))[0]) as handle:
            labels = handle.read_row_group(0)
        per_day = rows // args.days
        bare_seconds = bare_label_seconds = 0.0
        for day in range(args.days):
            bare_seconds += _bare_write(root / f"bare-{day}", table, None, per_day, args.rows_per_file)
            bare_label_seconds += _bare_write(root / f"bare-lab-{day}", table, labels, per_day, args.rows_per_file)

    bare_rps = rows / bare_seconds
    bare_label_rps = rows / bare_label_seconds
    figures = {
        "rows": rows,
        "entities": entities,
        "days": args.days,
        "chunk_rows": args.chunk_rows,
        "prefetch": args.prefetch,
        "compression": COMPRESSION,
        "synth_seconds": round(report.seconds, 3),
        "synth_rows_per_s": round(report.rows_per_s),
        "bare_write_seconds": round(bare_seconds, 3),
        "bare_write_rows_per_s": round(bare_rps),
        "bare_write_with_labels_seconds": round(bare_label_seconds, 3),
        "bare_write_with_labels_rows_per_s": round(bare_label_rps),
        "ratio_vs_bare_write": round(report.rows_per_s / bare_rps, 3),
        "ratio_vs_bare_write_with_labels": round(report.rows_per_s / bare_label_rps, 3),
        "bytes_written": report.bytes_written,
        "peak_rss_mib_before_synth": round(rss_before, 1),
        "peak_rss_mib_after_synth": round(rss_synth, 1),
        "cpus": os.cpu_count(),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "pyarrow": pa.__version__,
    }
    print(f"| measurement ({rows:,} rows, {args.days} days) | seconds | rows/s | synth ÷ this |")
    print("|---|---:|---:|---:|")
    print(f"| synth (generate + write features and labels) | {report.seconds:.2f} | {report.rows_per_s:,.0f} | 1.00 |")
    print(
        f"| bare write, features table only | {bare_seconds:.2f} | {bare_rps:,.0f} "
        f"| {figures['ratio_vs_bare_write']:.2f} |"
    )
    print(
        f"| bare write, features + labels | {bare_label_seconds:.2f} | {bare_label_rps:,.0f} "
        f"| {figures['ratio_vs_bare_write_with_labels']:.2f} |"
    )
    print(
        f"\npeak RSS after synth: {rss_synth:.0f} MiB (before: {rss_before:.0f} MiB); "
        f"written {report.bytes_written / 1e9:.2f} GB; load avg {figures['loadavg_1m_after']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
