"""Fixtures of the worker tests: Redis clients (fakeredis and real) and settings factories."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from runstream.core.settings import Settings, load_settings
from runstream.core.transport import Transport, open_transport


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


BACKENDS = [
    pytest.param(("fake", "streams"), id="fake-streams"),
    pytest.param(("fake", "list-reliable"), id="fake-list-reliable"),
    pytest.param(("fake", "list-poll"), id="fake-list-poll"),
    pytest.param(("real", "streams"), id="real-streams"),
    pytest.param(("real", "list-reliable"), id="real-list-reliable"),
    pytest.param(("real", "list-blocking"), id="real-list-blocking"),
]


@dataclass
class Setup:
    """A Redis client, settings naming a backend, and that backend's transport."""

    redis: Redis
    settings: Settings
    transport: Transport

    def with_settings(self, **overrides: Any) -> Setup:
        settings = self.settings.model_copy(update=overrides)
        return Setup(self.redis, settings, open_transport(settings, self.redis))


@pytest.fixture(params=BACKENDS)
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """Every backend, on fakeredis and on the real test database."""
    async for opened in _open_setup(request, *request.param):
        yield opened


@pytest.fixture(
    params=[
        pytest.param(("fake", "streams"), id="fake-streams"),
        pytest.param(("real", "list-reliable"), id="real-list-reliable"),
    ]
)
async def worker_setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """Two backends for worker tests, where the queue matters and the backend less."""
    async for opened in _open_setup(request, *request.param):
        yield opened


async def _open_setup(
    request: pytest.FixtureRequest, kind: str, backend: str
) -> AsyncIterator[Setup]:
    if kind == "fake":
        client = fakeredis.FakeAsyncRedis()
    else:
        client = Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=10)
        await client.flushdb()
    name, _, mode = backend.partition("-")
    settings = load_settings(
        _env_file=None, backend=name, list_mode=mode or "reliable", block_ms=100, idle_timeout=10
    )
    yield Setup(client, settings, open_transport(settings, client))
    await client.aclose()
