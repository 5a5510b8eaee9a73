"""The `case` fixture: each contract test runs once per backend mode and Redis server.

By default a test that takes `case` runs on every mode (`list-poll`, `list-blocking`,
`list-reliable`, `streams`) on fakeredis (`fake`) and on the real test database (`real`,
the `real_redis` fixture); ids look like `streams-real`. A test narrows this with
`@pytest.mark.parametrize("spec", cases(...), indirect=True)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.asyncio import Redis

from backends.support import Case, cases


@pytest.fixture(params=cases())
def spec(request: pytest.FixtureRequest) -> tuple[str, str, Redis | None, str | None]:
    """(mode, server, real client, real URL) of the case; the last two are None for fake."""
    # Sync on purpose: an async fixture cannot ask pytest for an async fixture by name.
    mode, server = request.param
    if server == "fake":
        return mode, server, None, None
    real: Redis = request.getfixturevalue("real_redis")
    return mode, server, real, request.getfixturevalue("redis_url")


@pytest.fixture
async def case(spec: tuple[str, str, Redis | None, str | None]) -> AsyncIterator[Case]:
    mode, server, real, url = spec
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()) if real is None else None
    made = Case(mode, server, real or fake, redis_url=url)
    yield made
    await made.close()
    if fake is not None:
        await fake.aclose()
