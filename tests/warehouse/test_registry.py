"""The model registry: register, promote, load with hash and contract checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb

from warehouse.errors import RegistryError
from warehouse.registry import Registry

FEATURES = ["f00", "f01", "f02"]


def _booster(n_features: int = 3, seed: int = 0) -> xgb.Booster:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(500, n_features)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=500) > 0).astype(np.float32)
    return xgb.train({"max_depth": 2, "objective": "binary:logistic"}, xgb.DMatrix(x, label=y), 5)


def test_register_promote_load_round_trip(tmp_path: Path) -> None:
    """A registered, promoted model loads back and predicts exactly as before."""
    reg = Registry(tmp_path)
    booster = _booster()
    manifest = reg.register("churn", "primary", booster, FEATURES, {"auc": 0.9}, {"train": ["2026-11-01"]})
    assert reg.production_version("churn", "primary") is None
    reg.promote("churn", "primary", manifest.version)
    loaded = reg.load("churn", "primary", FEATURES)
    assert loaded.manifest == manifest
    assert manifest.library_versions["xgboost"] == xgb.__version__
    x = np.random.default_rng(1).normal(size=(50, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.booster.inplace_predict(x), booster.inplace_predict(x))


def test_changed_bytes_are_refused(tmp_path: Path) -> None:
    """Flipping one byte of the artifact makes load fail with a hash-mismatch message."""
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "fallback", _booster(), FEATURES, {}, {})
    reg.promote("churn", "fallback", manifest.version)
    artifact = reg.kind_dir("churn", "fallback") / manifest.version / "model.ubj"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="does not match its manifest"):
        reg.load("churn", "fallback", FEATURES)


def test_feature_mismatch_is_refused(tmp_path: Path) -> None:
    """The models file now lists other (or reordered) features than the model was trained on."""
    reg = Registry(tmp_path)
    manifest = reg.register("churn", "primary", _booster(), FEATURES, {}, {})
    reg.promote("churn", "primary", manifest.version)
    with pytest.raises(RegistryError, match="do not match the models file"):
        reg.load("churn", "primary", ["f00", "f01", "f09"])
    with pytest.raises(RegistryError, match="different order"):
        reg.load("churn", "primary", ["f01", "f00", "f02"])


def test_no_production_model(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="prescore train --model churn"):
        Registry(tmp_path).load("churn", "primary", FEATURES)


def test_register_refuses_wrong_feature_count(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="4 names"):
        Registry(tmp_path).register("churn", "primary", _booster(), [*FEATURES, "f03"], {}, {})


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="unknown model kind"):
        Registry(tmp_path).versions("churn", "secondary")


def _promoted_under_umask(root: Path, mask: int) -> tuple[Registry, Any]:
    """A promoted fallback version registered by this process with umask ``mask``."""
    import os

    old = os.umask(mask)
    try:
        reg = Registry(root)
        manifest = reg.register("churn", "fallback", _booster(), FEATURES, {}, {})
        reg.promote("churn", "fallback", manifest.version)
    finally:
        os.umask(old)
    return reg, manifest


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o002, 0o664, 0o775), (0o022, 0o644, 0o755)])
def test_registry_files_take_the_umask_not_tempfile_modes(
    tmp_path: Path, mask: int, file_mode: int, dir_mode: int
) -> None:
    """``tempfile`` makes 0600 files and 0700 directories whatever the umask; the registry's must not."""

    _, manifest = _promoted_under_umask(tmp_path / "models", mask)
    modes = _modes(tmp_path / "models")
    assert modes["churn/fallback/production.json"] == file_mode
    assert modes[f"churn/fallback/{manifest.version}"] == dir_mode
    assert {m for p, m in modes.items() if p.endswith((".json", ".ubj"))} == {file_mode}
    assert {m for p, m in modes.items() if "." not in p.rsplit("/", 1)[-1]} == {dir_mode}


def test_a_registry_written_by_one_uid_is_read_by_another() -> None:
    """The batch image registers as one user; the online image (another uid, umask 022 here) reads the model."""

    from tests.support.other_user import as_other_user, shared_dir
    from warehouse.datasets.storage import sha256_file

    with shared_dir() as base:
        reg, _ = _promoted_under_umask(base / "models", 0o022)

        def read() -> bool:  # what loading the fallback reads; no xgboost after the fork
            read = reg.manifest("churn", "fallback", str(reg.production_version("churn", "fallback")))
            return sha256_file(base / "models" / "churn" / "fallback" / read.version / "model.ubj") == read.sha256

        read()
        assert as_other_user(read) is True
