"""Parquet datasets on a local path or object storage: the feature partitions, their contracts, the score files.

``storage`` is the path abstraction (local ``pathlib`` or fsspec URLs) with atomic commits, ``features`` the dated
feature and label partitions, ``contracts`` the checks a partition must pass before it is scored, ``score_files``
the committed Parquet parts of a score run.
"""
