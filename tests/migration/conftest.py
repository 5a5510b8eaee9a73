"""Every migration unit test runs on fakeredis and on the real test database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from migration.support import Transports


@pytest.fixture(params=["fake", "real"])
def server(request: pytest.FixtureRequest) -> Redis | None:
    """The real test database's client, or None for fakeredis."""
    # Sync on purpose: an async fixture cannot ask pytest for an async fixture by name.
    if request.param == "fake":
        return None
    real: Redis = request.getfixturevalue("real_redis")
    return real


@pytest.fixture
async def redis_client(server: Redis | None) -> AsyncIterator[Redis]:
    if server is not None:
        yield server
        return
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield fake
    await fake.aclose()


@pytest.fixture
async def transports(redis_client: Redis) -> AsyncIterator[Transports]:
    made = Transports(redis_client)
    yield made
    await made.close()
