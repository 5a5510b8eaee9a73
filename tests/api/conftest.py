"""Fixtures for the API tests: the app over fakeredis and over the real test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from api.support import Api, MakeApi
from runstream.api import create_app
from runstream.core.settings import load_settings


@pytest.fixture(params=["fakeredis", "real-redis"])
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    if request.param == "fakeredis":
        client: Redis = FakeAsyncRedis()
    else:
        client = Redis.from_url(request.getfixturevalue("redis_url"), socket_timeout=10)
        await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(params=["streams", "list-reliable"])
def backend(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides that pick a backend whose streams can be resumed."""
    name: str = request.param
    return (
        {"backend": "streams"}
        if name == "streams"
        else {"backend": "list", "list_mode": "reliable"}
    )


@pytest.fixture
async def make_api(redis_client: Redis) -> AsyncIterator[MakeApi]:
    """A factory: `await make_api(**settings overrides)` starts the app's lifespan."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> Api:
            app = create_app(load_settings(**overrides), redis_client)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://runstream.test")
            await stack.enter_async_context(client)
            return Api(client, app.state.services)

        yield make


@pytest.fixture
async def api(make_api: MakeApi, backend: dict[str, str]) -> Api:
    return await make_api(**backend, block_ms=100, heartbeat=15.0)
