"""The identity of a feature partition's input, cheap to take: no file is read.

``validate_contract`` records the fingerprint of the input it checked and the scoring job compares it with the
input it scores (``jobs.score.score_partition``); a committed run stores it, so a rerun on the same input is reused.
"""

from __future__ import annotations

import hashlib

from warehouse.datasets import storage
from warehouse.datasets.storage import StoragePath


def fingerprint(files: list[StoragePath]) -> str:
    """Identity of a partition's input: file names, sizes and modification times (ETags on object storage)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{storage.identity(path)}\n".encode())
    return digest.hexdigest()
