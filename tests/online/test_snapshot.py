"""Loading the models and their fallbacks: a corrupted artifact keeps the app unready, a missing one drops the rung."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from online.policy import threshold_cuts
from online.snapshot import load_snapshot
from tests.online.conftest import FEATS, MODEL, post, serve
from warehouse.registry import ARTIFACT, Registry

pytestmark = pytest.mark.asyncio


async def test_corrupted_fallback_artifact_keeps_the_app_unready(make_settings, home: Path):
    """A tampered artifact fails its hash check: /readyz 503 saying so, scores 503; restore + reload → ready."""
    registry = Registry(home / "models")
    version = registry.production_version(MODEL, "fallback")
    artifact = registry.kind_dir(MODEL, "fallback") / str(version) / ARTIFACT
    good = artifact.read_bytes()
    artifact.write_bytes(good[:-16] + b"\x00" * 16)
    async with serve(make_settings(admin_key_hashes=hashlib.sha256(b"adm").hexdigest())) as (_, client):
        ready = await client.get("/readyz")
        score = await client.get(f"/v1/scores/{MODEL}/a")
        refused = await client.post("/v1/admin/reload", headers={"X-API-Key": "adm"})
        artifact.write_bytes(good)
        reloaded = await client.post("/v1/admin/reload", headers={"X-API-Key": "adm"})
        after = await client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    assert "corrupted" in ready.json()["reason"] and str(home) not in ready.text
    assert score.status_code == 503 and refused.status_code == 409
    assert reloaded.status_code == 200 and after.status_code == 200 and after.json()["status"] == "ready"


async def test_no_production_fallback_means_no_fallback_rung(make_settings, home: Path, publish):
    (Registry(home / "models").kind_dir(MODEL, "fallback") / "production.json").unlink()
    async with serve(make_settings()) as (_, client):
        ready = await client.get("/readyz")
        body = (await post(client, "unknown", FEATS)).json()
    assert ready.status_code == 200 and "no production fallback" in ready.json()["models"][MODEL]["fallback"]
    assert body["source"] == "default" and body["score"] == 0.05


async def test_snapshot_holds_each_model_with_its_warmed_fallback(make_settings) -> None:
    """The models file with a promoted fallback: no problems, the fallback loaded and warmed, contract ranges kept."""
    snapshot = load_snapshot(make_settings())
    m = snapshot.models[MODEL]
    assert snapshot.problems == [] and m.fallback is not None
    assert m.fallback_note == f"fallback {m.fallback.version} loaded and warmed"
    assert list(m.bounds) == list(m.spec.fallback_features) and all(lo <= hi for lo, hi in m.bounds.values())
    assert m.policy_version.startswith("p-") and m.cuts == threshold_cuts(m.spec)


async def test_a_fallback_another_uid_cannot_read_keeps_the_app_unready_saying_so(make_settings) -> None:
    """production.json written 0600 by another user (as tempfile made it before): not ready, one reason naming the
    uid (the path goes to the log only)."""
    import os
    import shutil

    from tests.support.other_user import as_other_user, shared_dir

    settings = make_settings()
    load_snapshot(settings)  # imports done before the switch
    with shared_dir() as base:
        shutil.copytree(settings.home, base / "home")
        os.chmod(Registry(base / "home" / "models").kind_dir(MODEL, "fallback") / "production.json", 0o600)
        for path in [base / "home", *(base / "home").rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shared = make_settings(home=base / "home")

        def problems() -> list[str]:
            return load_snapshot(shared).problems

        found = as_other_user(problems)
    assert len(found) == 1 and "is not readable by uid" in found[0] and str(base) not in found[0]
