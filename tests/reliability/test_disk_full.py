"""The scores volume fills up while `prescore score` writes: a real ENOSPC from a 64 KiB tmpfs.

The tmpfs is mounted over ``PRESCORE_HOME/scores`` inside a private mount namespace (``unshare -m``; ``-r`` adds a
user namespace when not root), so it vanishes with the namespace even if the test is killed. The job must fail
with one clear line, mark its run failed with that reason, leave nothing committed or staged, and succeed when
rerun with room.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import END
from warehouse.catalog import COMMITTED, FAILED, Catalog

PRESCORE = Path(sys.executable).parent / "prescore"
SCRIPT = r"""
set -u
mount -t tmpfs -o size=64k tmpfs "$SCORES" || exit 97
"$PRESCORE" score -m churn -d "$DAY" --device cpu > "$OUT/full.out" 2> "$OUT/full.err"
echo $? > "$OUT/full.rc"
(cd "$SCORES" && find . -mindepth 1 | sort) > "$OUT/full.listing"
umount "$SCORES" && mount -t tmpfs -o size=64m tmpfs "$SCORES" || exit 98
"$PRESCORE" score -m churn -d "$DAY" --device cpu --json > "$OUT/room.out" 2> "$OUT/room.err"
echo $? > "$OUT/room.rc"
"""


def _unshare() -> list[str]:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    cmd = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]
    probe = subprocess.run([*cmd, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {probe.stderr.decode().strip()}")
    return cmd


def test_volume_full_mid_write_fails_clearly_and_commits_nothing(
    trained_template: tuple[Path, Path], tmp_path: Path, observe: Callable[..., None]
) -> None:
    template, models_file = trained_template
    home = tmp_path / "home"
    shutil.copytree(template, home)
    (home / "scores").mkdir(exist_ok=True)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PRESCORE_HOME": str(home), "PRESCORE_MODELS_FILE": str(models_file),
           "PRESCORE_DASK_LOCAL": "threads", "PRESCORE_REDIS_URL": "redis://127.0.0.1:1/0",
           "SCORES": str(home / "scores"), "OUT": str(out), "DAY": END.isoformat(),
           "PRESCORE": str(PRESCORE)}  # fmt: skip
    done = subprocess.run([*_unshare(), "sh", "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    full_rc, err = int((out / "full.rc").read_text()), (out / "full.err").read_text()
    assert full_rc == 1, err
    assert "Traceback (most recent call last)" not in err, err  # (Dask's own "Compute Failed" task log may precede)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no room to write the scores of churn"), err
    assert "No space left on device" in last and "nothing was committed" in last and "then rerun" in last, last
    listing = (out / "full.listing").read_text().split()
    assert not [p for p in listing if "run=" in p or ".staging-" in p], listing  # nothing committed, nothing staged

    catalog = Catalog.open(f"sqlite:///{home / 'catalog.db'}", migrate=False)
    try:
        runs = sorted(catalog.runs("churn", partition_date=END), key=lambda r: r.started_at)
    finally:
        catalog.close()
    assert [r.status for r in runs] == [FAILED, COMMITTED]
    assert "no room to write the scores" in (runs[0].error or "")

    assert int((out / "room.rc").read_text()) == 0, (out / "room.err").read_text()
    report = json.loads((out / "room.out").read_text())["run"]
    assert report["status"] == COMMITTED and report["rows_out"] > 0
    observe("disk_full", volume="tmpfs 64 KiB over PRESCORE_HOME/scores", exit_code=full_rc,
            error=last, left_in_volume=listing, failed_run_error=runs[0].error,
            rerun_with_room_rows=report["rows_out"])  # fmt: skip


SYNTH_SCRIPT = r"""
set -u
mount -t tmpfs -o size=64k tmpfs "$FEATURES" || exit 97
"$PRESCORE" synth --entities 20000 --days 1 --end-date "$DAY" > "$OUT/synth.out" 2> "$OUT/synth.err"
echo $? > "$OUT/synth.rc"
(cd "$FEATURES" && find . -name '*.parquet' | sort) > "$OUT/synth.listing"
"""


def test_volume_full_during_synth_is_one_line_and_no_partial_partition(tmp_path: Path) -> None:
    """Any command that hits a full volume says so in one line (exit 1), not with a traceback."""
    home = tmp_path / "home"
    (home / "features").mkdir(parents=True)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PRESCORE_HOME": str(home), "FEATURES": str(home / "features"), "OUT": str(out),
           "DAY": END.isoformat(), "PRESCORE": str(PRESCORE)}  # fmt: skip
    done = subprocess.run([*_unshare(), "sh", "-c", SYNTH_SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    err = (out / "synth.err").read_text()
    assert int((out / "synth.rc").read_text()) == 1, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no room to write") and "No space left on device" in last, err
    visible = [p for p in (out / "synth.listing").read_text().split() if "/dt=" in p and "/." not in p]
    assert visible == [], visible  # no partition is visible half-written
