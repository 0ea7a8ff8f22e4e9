"""Schemathesis against the app's own OpenAPI schema (in-process ASGI, lifespan run, real Redis + fallback model):
no generated request — valid or not — gets a 5xx, every status and body matches the documentation, and every
4xx carries ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from online.app import create_app
from online.settings import OnlineSettings
from tests.online.conftest import now_utc


@pytest.fixture
def app(make_settings: Callable[..., OnlineSettings], publish: Callable[..., str]) -> Iterator[FastAPI]:
    """The app under test; schemathesis runs its lifespan on first call, ``shutdown_lifespans`` ends it."""
    publish({"a": 0.8, "b": 0.2, "0": 0.5}, now_utc() - timedelta(hours=1))
    yield create_app(make_settings(batch_max=50))
    shutdown_lifespans()  # closes this app's Redis connections before the next test's flush


# The schema is read from an app that is never started (building one opens nothing); requests go to the fixture's.
# (``schemathesis.pytest.from_fixture`` would read it from the running app, but fails on pytest 9.)
schema = schemathesis.openapi.from_dict(create_app(OnlineSettings(redis_url="redis://127.0.0.1:1/0")).openapi())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: schemathesis.Case, app: FastAPI) -> None:
    response = case.call(app=app)
    case.validate_response(response, checks=CHECKS)
    assert response.status_code < 500 or (response.status_code == 503 and case.path == "/readyz")
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert error["code"] and error["message"]
