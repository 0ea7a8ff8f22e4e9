"""Validation of request input: every refusal is an ``InvalidInput`` (422) naming the offending field.

The entity-id rule is the score store's (``warehouse.store.entity_id_problem``); feature values are checked
against the model's fallback features and their contract ranges (``ModelRuntime.bounds``). The checks run on
the decoded JSON values as they are (no pydantic on the request path): ``type(x) is ...`` on purpose, so that
``true`` is not a number and ``1`` is not a string.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from online.errors import InvalidInput
from online.snapshot import ModelRuntime
from warehouse.store import entity_id_problem


def check_entity_id(value: Any, where: str = "entity_id") -> str:
    """The store's id rule (``warehouse.store.entity_id_problem``), as a 422 naming the field."""
    if type(value) is not str:
        raise InvalidInput(where, f"must be a string, got {_json_type(value)}")
    problem = entity_id_problem(value)
    if problem is not None:
        raise InvalidInput(where, problem)
    return value


def check_features(m: ModelRuntime, raw: Any, where: str = "features") -> list[float] | None:
    """Feature values in the fallback model's order, or None when not given; 422 naming the bad feature.

    A category feature takes a string: its code in the fallback version (``ModelRuntime.codes``); an unknown one
    is missing (NaN), or a 422 naming the allowed values when its contract says ``unknown: reject``."""
    if raw is None:
        return None
    if type(raw) is not dict:
        raise InvalidInput(where, f"must be an object of feature name → number, or null; got {_json_type(raw)}")
    coded: dict[str, float] = {}
    for name, value in raw.items():
        bounds = m.bounds.get(name)
        if bounds is None:
            raise InvalidInput(f"{where}.{name}", f"unknown feature; model {m.name} takes {sorted(m.bounds)}")
        codes = m.codes.get(name)
        if codes is not None:
            coded[name] = _category_code(m, name, codes, value, f"{where}.{name}")
            continue
        if type(value) is not float and type(value) is not int:
            if type(value) is bool and name in m.flags:  # a bool feature: true is 1, false is 0
                continue
            kind = "true, false, 0 or 1" if name in m.flags else "a number"
            raise InvalidInput(f"{where}.{name}", f"must be {kind}, got {_json_type(value)}")
        if not bounds[0] <= value <= bounds[1]:  # also false for NaN
            raise InvalidInput(f"{where}.{name}", f"{value!r} is outside the contract range [{bounds[0]}, {bounds[1]}]")
    missing = [name for name in m.spec.fallback_features if name not in raw]
    if missing:
        raise InvalidInput(f"{where}.{missing[0]}", f"missing; model {m.name} needs {list(m.spec.fallback_features)}")
    if coded:
        return [coded[name] if name in coded else float(raw[name]) for name in m.spec.fallback_features]
    return [float(raw[name]) for name in m.spec.fallback_features]


def _category_code(m: ModelRuntime, name: str, codes: dict[str, float], value: Any, where: str) -> float:
    if type(value) is not str:
        raise InvalidInput(where, f"must be a string (a category), got {_json_type(value)}")
    code = codes.get(value)
    if code is not None:
        return code
    if name in m.reject:
        shown = sorted(codes)
        more = f" and {len(shown) - 20} more" if len(shown) > 20 else ""
        raise InvalidInput(where, f"{value[:100]!r} is not an allowed category; allowed: {shown[:20]}{more}")
    return float("nan")  # unknown: missing — the fallback model takes its default branch


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", type(None): "null", list: "an array", dict: "an object"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


async def json_object(request: Request, fields: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with no field outside ``fields`` (422 naming the body or the field)."""
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise InvalidInput("body", "is not valid JSON") from None
    if type(body) is not dict:
        raise InvalidInput("body", f"must be a JSON object, got {_json_type(body)}")
    extra = sorted(set(body) - fields)
    if extra:
        raise InvalidInput(extra[0], f"unknown field; accepted: {sorted(fields)}")
    return body
