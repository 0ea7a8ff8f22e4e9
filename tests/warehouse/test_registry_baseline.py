"""A version's baseline in the registry: written with the version, hash-checked when read, optional for old ones."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.warehouse.test_registry import FEATURES, _booster
from warehouse.errors import RegistryError
from warehouse.registry import BASELINE, MANIFEST, Registry

DOC = {"format": 1, "source": {"kind": "training"}, "features": {"f00": {"kind": "numeric", "quantiles": [0.0, 1.0]}}}


def test_the_baseline_is_stored_with_the_version_and_its_hash_in_the_manifest(tmp_path: Path) -> None:
    """``register(baseline=...)`` writes ``baseline.json`` in the version directory (staged with it: no staging
    directory is left), records its sha256, and ``baseline`` returns it."""
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "primary", _booster(), FEATURES, {}, {}, baseline=DOC)
    vdir = reg.kind_dir("churn", "primary") / manifest.version
    assert sorted(p.name for p in vdir.iterdir()) == [BASELINE, MANIFEST, "model.ubj"]
    assert reg.leftovers("churn", "primary") == []
    assert len(manifest.baseline_sha256) == 64
    assert reg.baseline("churn", "primary", manifest.version) == DOC
    assert reg.manifest("churn", "primary", manifest.version) == manifest


def test_a_version_without_a_baseline_still_loads(tmp_path: Path) -> None:
    """A version registered before baselines (its manifest has no ``baseline_sha256`` key at all) loads, and its
    baseline is None, not an error."""
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "primary", _booster(), FEATURES, {}, {})
    path = reg.kind_dir("churn", "primary") / manifest.version / MANIFEST
    old = {k: v for k, v in asdict(manifest).items() if k != "baseline_sha256"}
    path.write_text(json.dumps(old))
    reg.promote("churn", "primary", manifest.version)
    assert reg.load("churn", "primary", FEATURES).manifest.baseline_sha256 == ""
    assert reg.baseline("churn", "primary", manifest.version) is None


def test_a_changed_or_missing_baseline_is_refused(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "primary", _booster(), FEATURES, {}, {}, baseline=DOC)
    path = reg.kind_dir("churn", "primary") / manifest.version / BASELINE
    path.write_text(json.dumps({**DOC, "format": 2}))
    with pytest.raises(RegistryError, match="does not match its manifest"):
        reg.baseline("churn", "primary", manifest.version)
    path.unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.baseline("churn", "primary", manifest.version)
    reg.promote("churn", "primary", manifest.version)
    assert reg.load("churn", "primary", FEATURES).manifest.version == manifest.version  # scoring is not stopped


def test_a_manifest_from_a_newer_prescore_loads_ignoring_keys_this_one_does_not_know(tmp_path: Path) -> None:
    """An online reader may run older code than the batch side that wrote a version (a rolling upgrade): keys it
    does not know are ignored, the version still loads and scores."""
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "primary", _booster(), FEATURES, {}, {})
    path = reg.kind_dir("churn", "primary") / manifest.version / MANIFEST
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "written_by_a_later_release": {"x": 1}}))
    assert reg.manifest("churn", "primary", manifest.version) == manifest
    assert reg.load("churn", "primary", FEATURES, manifest.version).manifest == manifest
