"""``prescore lookup`` (the API's ladder from the CLI) and ``prescore serve`` (uvicorn, detached and stopped by
PID), against the real test Redis and a published run."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
from typer.testing import CliRunner

from jobs.cli import app
from jobs.publish import publish_run
from jobs.runtime import Runtime
from jobs.score import score_partition
from jobs.serve import http_json, running_server
from tests.jobs.conftest import END
from tests.support.listeners import listening
from warehouse.store.local_server import free_port

runner = CliRunner()


@pytest.fixture
def published(rt: Runtime) -> dict[str, Any]:
    """A committed, published run of churn for END; its Parquet scores by entity id; the CLI environment."""
    report = score_partition(rt, "churn", END, device="cpu")
    publish_run(rt, "churn", report.run_id)
    table = pq.read_table(report.output_path, columns=["entity_id", "score"])
    scores = dict(zip(table.column("entity_id").to_pylist(), table.column("score").to_pylist(), strict=True))
    env = {
        "PRESCORE_HOME": str(rt.home),
        "PRESCORE_MODELS_FILE": str(rt.settings.models_file),
        "PRESCORE_REDIS_URL": rt.redis_url,
        "PRESCORE_CATALOG_URL": "",
    }
    return {"run_id": report.run_id, "scores": scores, "env": env}


def _lookup(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, ["lookup", "--model", "churn", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _fallback_features(rt: Runtime) -> tuple[list[str], dict[str, float]]:
    names = list(rt.config.model("churn").fallback_features)
    return names, {name: 0.5 * (i + 1) for i, name in enumerate(names)}


def test_lookup_walks_the_ladder(rt: Runtime, published: dict[str, Any]) -> None:
    """A known entity is precomputed (= Parquet); a new one with features gets the fallback model's score (=
    xgboost on the production fallback artifact); a new one without features gets the model's default."""
    known = sorted(published["scores"])[:2]
    names, values = _fallback_features(rt)
    features = json.dumps({"NEW-1": values})
    answers = _lookup(published["env"], *known, "NEW-1", "NEW-2", "--features", features)
    by_id = {a["entity_id"]: a for a in answers}
    for entity in known:
        a = by_id[entity]
        assert (a["source"], a["run_id"], a["fallback_used"]) == ("precomputed", published["run_id"], False)
        assert a["stale"] is False  # END is yesterday by the test clock: well inside max_age_s
        assert a["score"] == pytest.approx(published["scores"][entity], abs=1e-7)

    version = rt.registry.production_version("churn", "fallback")
    booster = xgb.Booster()
    booster.load_model(rt.registry.kind_dir("churn", "fallback") / str(version) / "model.ubj")
    row = np.array([[values[n] for n in names]], dtype=np.float32)
    expected = float(booster.inplace_predict(row)[0])
    fallback = by_id["NEW-1"]
    assert (fallback["source"], fallback["model_version"], fallback["fallback_used"]) == ("fallback", version, True)
    assert fallback["score"] == pytest.approx(expected, abs=1e-6)

    default = by_id["NEW-2"]
    assert (default["source"], default["model_version"], default["run_id"]) == ("default", None, None)
    assert default["score"] == rt.config.model("churn").default_score


def test_lookup_with_redis_down_answers_from_fallback_and_default(rt: Runtime, published: dict[str, Any]) -> None:
    env = {**published["env"], "PRESCORE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    _, values = _fallback_features(rt)
    known = sorted(published["scores"])[0]
    answers = _lookup(env, known, "NEW-1", "--features", json.dumps({"NEW-1": values}))
    assert [a["source"] for a in answers] == ["default", "fallback"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "nope", "X1"], "unknown model 'nope'"),
        (["--model", "churn", "bad\x01id"], "control character"),
        (["--model", "churn", "X1", "--features", "{not json"], "--features is not valid JSON"),
        (["--model", "churn", "X1", "--features", "[1]"], "--features must be a JSON object"),
        (["--model", "churn", "X1", "--features", '{"X2": {}}'], "'X2', which is not one of the entity ids"),
        (["--model", "churn", "X1", "--features", '{"X1": {"f00": 1}}'], "features of X1.f01: missing"),
        (["--model", "churn", "X1", "--features", '{"X1": {"nope": 1}}'], "features of X1.nope: unknown feature"),
    ],
)
def test_lookup_bad_input_is_one_line(published: dict[str, Any], args: list[str], message: str) -> None:
    result = runner.invoke(app, ["lookup", *args], env=published["env"])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_serve_detached_answers_then_stops_by_pid(rt: Runtime, published: dict[str, Any]) -> None:
    env, port = published["env"], free_port()
    started = runner.invoke(app, ["serve", "--detach", "--port", str(port)], env=env)
    assert started.exit_code == 0, started.output
    info = running_server(rt.home)
    assert info is not None and info.port == port
    try:
        entity = sorted(published["scores"])[0]
        status, body = http_json("GET", f"http://127.0.0.1:{port}/v1/scores/churn/{entity}")
        assert status == 200, body
        assert isinstance(body, dict) and body["source"] == "precomputed" and body["run_id"] == published["run_id"]
        api_listeners = listening(info.pid)  # the server and its workers: 127.0.0.1:port, nothing else
        assert {(item.address, item.port) for item in api_listeners} == {("127.0.0.1", port)}, api_listeners
        again = runner.invoke(app, ["serve", "--detach", "--port", str(free_port())], env=env)
        assert again.exit_code == 1 and "already running" in again.output
    finally:
        stopped = runner.invoke(app, ["serve", "--stop"], env=env)
    assert stopped.exit_code == 0 and f"pid {info.pid}" in stopped.output
    with pytest.raises(ProcessLookupError):
        os.kill(info.pid, 0)
    assert running_server(rt.home) is None
    assert http_json("GET", f"http://127.0.0.1:{port}/healthz", timeout=1.0)[0] == 0


def test_serve_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--port", str(port)], env={"PRESCORE_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output and "--port" in result.output
