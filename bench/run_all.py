"""``make bench``: run every benchmark with its default arguments, results in bench/results/*.json.

Every figure is a ratio against a baseline measured in the same run on the same machine; BENCHMARKS.md
records them with the command that produced them. Pass names to run a subset: ``python bench/run_all.py score``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
BENCHES: dict[str, list[str]] = {
    "synth": ["bench_synth.py", "--rows", "10000000"],
    "store": ["bench_store.py", "--entities", "1000000"],
    "restore": ["bench_restore.py", "--entities", "1000000"],
    "fallback": ["bench_fallback.py"],
    "score": ["bench_score.py", "--sizes", "1000000", "5000000", "10000000"],
    "commands": ["bench_commands.py", "--rows", "4000000", "--rounds", "3"],
    "online": ["bench_online.py"],
    "canary": ["bench_canary.py"],
    "read_cache": ["bench_read_cache.py"],
    "online_start": ["bench_online_start.py"],
    "overlay": ["bench_overlay.py"],
}


def main() -> int:
    chosen = sys.argv[1:] or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in chosen:
        script, *args = BENCHES[name]
        if not (HERE / script).exists():
            print(f"== {name}: {script} not present, skipped")
            continue
        cmd = [sys.executable, str(HERE / script), *args, "--json", str(RESULTS / f"{name}.json")]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.call(cmd) != 0:
            failed.append(name)
        print(f"== {name} took {time.perf_counter() - start:.0f}s", flush=True)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
