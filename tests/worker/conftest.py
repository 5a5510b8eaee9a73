"""Fixtures of the worker tests: Redis clients (fakeredis and real) and settings factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from runstream.core.settings import Settings, load_settings


@pytest.fixture
async def fake_redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


@pytest.fixture(params=["fake", "real"])
async def any_redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """A fakeredis client, then a client of the real test database (flushed)."""
    if request.param == "fake":
        client = fakeredis.FakeAsyncRedis()
        yield client
        await client.aclose()
    else:
        client = Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=10)
        await client.flushdb()
        yield client
        await client.aclose()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return load_settings(_env_file=None, **overrides)

    return make
