"""Fixtures for the fault tests: real processes (from the e2e support) on the test Redis,
or on a `redis-server` of the test's own (for restarts)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from fakeredis import FakeAsyncRedis
from redis.asyncio import Redis

from e2e.support import REPO, Procs
from faults.support import RedisServer

BACKENDS = {
    "streams": {"RUNSTREAM_BACKEND": "streams"},
    "list-reliable": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_LIST_MODE": "reliable"},
    "list-blocking": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_LIST_MODE": "blocking"},
    "list-poll": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_LIST_MODE": "poll"},
}
MakeProcs = Callable[..., Procs]


@pytest.fixture(params=["fake", "real"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    """An asyncio client of fakeredis, or of the real test database (flushed)."""
    if request.param == "fake":
        made: Redis = FakeAsyncRedis()
    else:
        made = Redis.from_url(request.getfixturevalue("redis_url"))
        await made.flushdb()
    yield made
    await made.aclose()


def process_env(redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    paths = [str(REPO / "tests" / "e2e"), str(REPO / "tests"), env.get("PYTHONPATH", "")]
    env.update(
        RUNSTREAM_REDIS_URL=redis_url,
        RUNSTREAM_DEMO_TOKEN_RATE="400",
        RUNSTREAM_BLOCK_MS="200",
        PYTHONPATH=os.pathsep.join(paths),
    )
    return env


@pytest.fixture
def make_procs(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., Procs]]:
    """`make_procs(backend, redis_url=None, **env)`: starts processes; all stopped after."""
    made: list[Procs] = []

    def make(backend: str = "streams", url: str | None = None, **env: str) -> Procs:
        if url is None:
            redis.Redis.from_url(redis_url).flushdb()
        base = process_env(url or redis_url)
        procs = Procs({**base, **BACKENDS[backend], **env}, tmp_path)
        made.append(procs)
        return procs

    yield make
    for procs in made:
        procs.stop_all()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` of this test's own on a free loopback port; stopped after the test."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
