"""Request validation: every bad input is a 422 naming the field (over HTTP, and the checks called directly)."""

from __future__ import annotations

import pytest

from online.errors import InvalidInput
from online.snapshot import ModelRuntime
from online.validation import check_entity_id, check_features
from tests.online.conftest import FEATS, HOUR, MODEL, SCORES, now_utc, post, serve
from warehouse.model_config import load_config
from warehouse.settings import DEFAULT_MODELS_FILE
from warehouse.store import entity_id_problem

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "field"),
    [
        ("GET", "/v1/scores/nope/a", None, 404, "unknown model"),
        ("POST", "/v1/scores/nope/batch", {"entity_ids": ["a"]}, 404, "unknown model"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": ""}, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/", None, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/{'x' * 129}", None, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "é" * 65}, 422, "entity_id"),
        ("GET", f"/v1/scores/{MODEL}/a%0Ab", None, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a\u0085b"}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": 7}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"features": FEATS}, 422, "entity_id"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a", "extra": 1}, 422, "extra"),
        ("POST", f"/v1/scores/{MODEL}", {"entity_id": "a", "features": [1, 2]}, 422, "features"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a", "b\x00"]}, 422, "entity_ids[1]"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": []}, 422, "entity_ids"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a"], "features": {"zz": FEATS}}, 422, "features.zz"),
        ("POST", f"/v1/scores/{MODEL}/batch", {"entity_ids": ["a", "b", "c", "d"]}, 413, "at most 3"),
    ],
)
async def test_bad_requests_get_json_errors_naming_the_problem(make_settings, method, path, payload, status, field):
    async with serve(make_settings(batch_max=3)) as (_, client):
        r = await client.request(method, path, json=payload)
    assert r.status_code == status, r.text
    assert field in r.json()["error"]["message"] and r.json()["error"]["code"]


@pytest.mark.parametrize(
    ("features", "field", "problem"),
    [
        ({k: v for k, v in FEATS.items() if k != "f03"}, "features.f03", "missing"),
        ({**FEATS, "f09": 1.0}, "features.f09", "unknown feature"),
        ({**FEATS, "f01": True}, "features.f01", "boolean"),
        ({**FEATS, "f02": "3"}, "features.f02", "string"),
        ({**FEATS, "f04": None}, "features.f04", "null"),
        ({**FEATS, "f05": 1001.0}, "features.f05", "outside the contract range"),
        ({**FEATS, "f06": -1e300}, "features.f06", "outside the contract range"),
    ],
)
async def test_invalid_features_are_refused_naming_the_feature(make_settings, publish, features, field, problem):
    """Features are validated even when the precomputed score would do (the answer must not depend on the store)."""
    publish(SCORES, now_utc() - HOUR)
    async with serve(make_settings()) as (_, client):
        r = await post(client, "a", features)
        rb = await client.post(f"/v1/scores/{MODEL}/batch", json={"entity_ids": ["a"], "features": {"a": features}})
    assert r.status_code == rb.status_code == 422
    assert r.json()["error"]["message"].startswith(f"{field}:") and problem in r.json()["error"]["message"]
    assert rb.json()["error"]["message"].startswith(f"features.a.{field.split('.')[1]}:")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"entity_id": NaN}', b"1e999"])
async def test_malformed_json_is_422(make_settings, body: bytes):
    async with serve(make_settings()) as (_, client):
        r = await client.post(f"/v1/scores/{MODEL}", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("body")


def _runtime() -> ModelRuntime:
    spec = load_config(DEFAULT_MODELS_FILE).model(MODEL)
    return ModelRuntime(MODEL, spec, "p", None, "", dict.fromkeys(spec.fallback_features, (-10.0, 10.0)), ())


async def test_entity_id_check_is_the_store_rule() -> None:
    """``check_entity_id`` refuses what ``warehouse.store.entity_id_problem`` refuses, in its words, at the field."""
    for value in ["", "x" * 129, "a\nb", "a\u0085b", "é" * 65]:
        problem = entity_id_problem(value)
        assert problem is not None
        with pytest.raises(InvalidInput) as err:
            check_entity_id(value, "entity_ids[3]")
        assert err.value.field == "entity_ids[3]" and err.value.message == f"entity_ids[3]: {problem}"
    assert check_entity_id("C0000000001") == "C0000000001"
    with pytest.raises(InvalidInput, match=r"^entity_id: must be a string, got a number$"):
        check_entity_id(7)


async def test_features_come_back_in_the_fallback_models_order() -> None:
    """Features given in any order are returned in the fallback model's order; none given → None."""
    m = _runtime()
    names = list(m.spec.fallback_features)
    given = {name: float(i) for i, name in reversed(list(enumerate(names)))}
    assert check_features(m, given) == [float(i) for i in range(len(names))]
    assert check_features(m, None) is None
    with pytest.raises(InvalidInput) as err:
        check_features(m, {**given, names[0]: 11}, "features.e1")
    assert err.value.field == f"features.e1.{names[0]}" and "outside the contract range" in err.value.message


async def test_a_bool_fallback_feature_takes_true_false_0_or_1() -> None:
    m = _runtime()
    names = list(m.spec.fallback_features)
    flag = names[0]
    m = ModelRuntime(MODEL, m.spec, "p", None, "", {**m.bounds, flag: (0.0, 1.0)}, (), frozenset({flag}))
    values = dict.fromkeys(names, 1.0)
    for given, as_float in ((True, 1.0), (False, 0.0), (1, 1.0), (0, 0.0)):
        assert check_features(m, {**values, flag: given})[0] == as_float  # type: ignore[index]
    with pytest.raises(InvalidInput, match=rf"features\.{flag}: 2 is outside the contract range \[0\.0, 1\.0\]"):
        check_features(m, {**values, flag: 2})
    with pytest.raises(InvalidInput, match=rf"features\.{flag}: must be true, false, 0 or 1, got a string"):
        check_features(m, {**values, flag: "yes"})
    with pytest.raises(InvalidInput, match=rf"features\.{names[1]}: must be a number, got a boolean"):
        check_features(m, {**values, names[1]: True})  # not a bool feature
