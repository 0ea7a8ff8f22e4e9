"""One lookup through a fresh ``AsyncScoreReader`` (as the API makes them), from synchronous test code."""

from __future__ import annotations

import asyncio
from typing import TypeVar

import pytest

from warehouse.store import AsyncScoreReader

E = TypeVar("E", bound=BaseException)


def async_score(url: str, model: str, entity_id: str) -> float | None:
    """The stored score of ``entity_id``, read with the asyncio reader (None when absent)."""

    async def read() -> float | None:
        reader = AsyncScoreReader.from_url(url)
        try:
            hit = await reader.get(model, entity_id)
        finally:
            await reader.aclose()
        return hit.score if hit else None

    return asyncio.run(read())


def async_refusal(url: str, model: str, entity_id: str, error: type[E]) -> E:
    """The ``error`` the asyncio reader raises for one lookup (fails the test when it raises nothing)."""

    async def read() -> E:
        reader = AsyncScoreReader.from_url(url)
        try:
            with pytest.raises(error) as raised:
                await reader.get(model, entity_id)
        finally:
            await reader.aclose()
        return raised.value

    return asyncio.run(read())
