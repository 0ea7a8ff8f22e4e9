"""Progress for long work: a bar on a terminal, plain log lines (about every 10 %) otherwise."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("prescore.progress")
Callback = Callable[[int, int], None]


@contextmanager
def progress_bar(label: str, unit: str = "items") -> Iterator[Callback]:
    """Yield ``callback(done, total)``; renders a rich bar when stderr is a terminal."""
    if sys.stderr.isatty():
        with Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} " + unit),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
        ) as bar:  # fmt: skip
            task = bar.add_task(label, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return

    start = time.monotonic()
    last_decile = -1

    def log_line(done: int, total: int) -> None:
        nonlocal last_decile
        decile = int(10 * done / total) if total else 10
        if decile != last_decile:
            last_decile = decile
            rate = done / max(time.monotonic() - start, 1e-9)
            log.info("%s: %s/%s %s (%.0f %s/s)", label, f"{done:,}", f"{total:,}", unit, rate, unit)

    yield log_line
