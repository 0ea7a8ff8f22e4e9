"""Log files prescore writes itself — the detached API's ``api.log``, the embedded Redis's ``redis.log`` — bounded
by size (``PRESCORE_LOG_MAX_MB``) with a bounded number of backups (``PRESCORE_LOG_BACKUPS``).

``rotate`` is copy-then-truncate, so it works while another process keeps the file open, provided that process
writes in append mode: the detached API's stdout and stderr are opened ``"ab"`` (``O_APPEND``) and Redis reopens
its log file for every line, so their next write lands at the start of the emptied file (no hole, no growth).
Lines written between the copy and the truncate are lost (the two steps are microseconds apart).

Bound: the file is at most ``max_bytes`` plus what is written between two checks; older content lives in at most
``backups`` files ``<name>.1`` (newest) … ``<name>.<backups>``; the oldest is dropped at each rotation.
``Rotator`` checks one file every ``interval_s`` in a daemon thread (the detached API runs one on its own log);
``jobs.retention`` rotates both files once per pass as well.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

log = logging.getLogger(__name__)
MIB = 1 << 20


def backup(path: Path, index: int) -> Path:
    """``<path>.<index>`` (pure)."""
    return path.with_name(f"{path.name}.{index}")


def needs_rotation(path: Path, max_bytes: int) -> int | None:
    """The file's size when it is larger than ``max_bytes``, else None (also for a missing file)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    return size if size > max_bytes else None


def rotate(path: Path, max_bytes: int, backups: int) -> int | None:
    """Rotate ``path`` when it is larger than ``max_bytes`` (see the module docstring): shift the backups up by one
    (dropping ``<name>.<backups>``), copy the file to ``<name>.1``, truncate it. ``backups=0`` only truncates.
    Returns the size rotated away, or None when the file was small enough (or missing)."""
    size = needs_rotation(path, max_bytes)
    if size is None:
        return None
    if backups > 0:
        backup(path, backups).unlink(missing_ok=True)
        for index in range(backups - 1, 0, -1):
            if backup(path, index).exists():
                os.replace(backup(path, index), backup(path, index + 1))
        tmp = path.with_name(f".{path.name}.rotating")
        shutil.copyfile(path, tmp)
        os.replace(tmp, backup(path, 1))
    with path.open("r+b") as fh:
        fh.truncate(0)
    log.info("rotated %s (%d bytes, over %d); %d backups kept", path, size, max_bytes, backups)
    return size


class Rotator:
    """Rotate one file every ``interval_s`` seconds in a daemon thread, until ``stop``."""

    def __init__(self, path: Path, max_bytes: int, backups: int, interval_s: float = 10.0) -> None:
        self.path, self.max_bytes, self.backups, self.interval_s = path, max_bytes, backups, interval_s
        self.rotations = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rotate-{path.name}", daemon=True)

    def start(self) -> Rotator:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if rotate(self.path, self.max_bytes, self.backups) is not None:
                    self.rotations += 1
            except OSError as exc:  # a full disk must not take the API down: say so and try again next time
                log.warning("could not rotate %s: %s", self.path, exc)
