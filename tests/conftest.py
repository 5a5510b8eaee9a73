"""Fixtures shared by every test: where the real Redis is, and clients for it.

Real-Redis tests use `RUNSTREAM_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/15`) and
flush that database before each test. Without a server they skip, unless
`RUNSTREAM_TEST_REQUIRE_REDIS=1` (set by `make test`, so CI never skips them silently).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import redis
from redis.asyncio import Redis

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis database the tests may flush; skips (or fails) if none answers."""
    url = os.environ.get("RUNSTREAM_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as err:
        if os.environ.get("RUNSTREAM_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(f"no Redis answers at {url} ({err}); run scripts/ensure-redis")
        pytest.skip(f"no Redis answers at {url}")
    return url


@pytest.fixture
async def real_redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the real test database, flushed before the test."""
    client = Redis.from_url(redis_url, socket_timeout=10)
    await client.flushdb()
    yield client
    await client.aclose()
