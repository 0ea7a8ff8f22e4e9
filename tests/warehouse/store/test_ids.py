"""Entity ids and their bucket: CRC-32 of the UTF-8 bytes, the vectorised twin, stability across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

from tests.warehouse.store.sample_runs import ten_digit_ids
from warehouse.store.ids import bucket_of, buckets, id_array


def test_bucket_function_is_crc32_and_vectorised_twin_agrees() -> None:
    """The bucket of an id is CRC-32 of its UTF-8 bytes mod n, for short, long, non-ASCII and mixed-length ids."""
    assert zlib.crc32(b"123456789") == 0xCBF43926 == bucket_of(b"123456789", 2**32)
    rng = np.random.default_rng(3)
    alphabet = list("abcXYZ019-_é漢字🙂")
    ids = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 30)))) for _ in range(3000)]
    ids += [*ten_digit_ids(2000), "x" * 128, "é" * 64]
    for n in (1, 7, 313, 100_003):
        expected = [bucket_of(i.encode(), n) for i in ids]
        assert buckets(id_array(ids), n).tolist() == expected
        assert buckets(id_array(ids).slice(100, 50), n).tolist() == expected[100:150]


def test_bucket_function_is_stable_across_processes() -> None:
    """A fresh interpreter with another hash seed computes the same buckets (no use of hash())."""
    ids = ["1234567890", "user-17", "héllo", "x" * 128]
    code = (
        "from warehouse.store.ids import bucket_of, buckets, id_array\n"
        f"ids = {ids!r}\n"
        "print([bucket_of(i.encode(), 1009) for i in ids], buckets(id_array(ids), 1009).tolist())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=Path(__file__).parents[3]
    ).stdout
    here = [bucket_of(i.encode(), 1009) for i in ids]
    assert out.strip() == f"{here} {here}"
    assert here == [zlib.crc32(i.encode()) % 1009 for i in ids]
