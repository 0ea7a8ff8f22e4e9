"""A/B of the score store's writer between two source trees, on one fresh redis-server, same process shape.

    python bench/ab_store_write.py OLD_TREE NEW_TREE [--rounds 3] [--batch 1000000]

Each round runs, in a child process per tree (alternating), one writer loading the same 1M ids in ``--batch``
batches into an emptied server, and prints entities/s. An old tree is a ``git worktree`` of an earlier commit; the
child imports ``warehouse.store`` (or the pre-split ``warehouse.score_store``) from the tree it is given.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time, numpy as np, redis
from datetime import UTC, datetime
url, batch = sys.argv[1], int(sys.argv[2])
try:
    from warehouse.store import ScoreStore
except ImportError:
    from warehouse.score_store import ScoreStore
rng = np.random.default_rng(1)
ids = list(dict.fromkeys(f"{x:010d}" for x in rng.integers(0, 10**10, 1_000_000)))
scores = rng.random(len(ids)).astype(np.float32)
redis.Redis.from_url(url).flushall()
with ScoreStore.from_url(url) as store:
    store.create_run("bench", "r1", "v1", datetime(2026, 1, 1, tzinfo=UTC), len(ids))
    writer = store.writer("bench", "r1")
    t = time.perf_counter()
    for i in range(0, len(ids), batch):
        writer.write_batch(ids[i : i + batch], scores[i : i + batch])
    print(round(len(ids) / (time.perf_counter() - t)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs=2, type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1_000_000)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from warehouse.store import start_redis

    with tempfile.TemporaryDirectory(prefix="prescore-ab-") as tmp:
        server = start_redis(Path(tmp))
        try:
            for k in range(args.rounds):
                row = []
                for tree in args.trees:
                    out = subprocess.run(
                        [sys.executable, "-c", CHILD, server.url, str(args.batch)],
                        env={"PYTHONPATH": str(tree.resolve()), "PATH": "/usr/bin:/bin"},
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    row.append(f"{tree}: {int(out.stdout):,}/s")
                print(f"round {k + 1}: " + "  ".join(row))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
