"""The API served by a real uvicorn in this process: disconnects and reader slots."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from runstream.api import create_app
from runstream.api.services import Services
from runstream.core.events import Event
from runstream.core.settings import load_settings

BACKENDS = {
    "streams": {"backend": "streams"},
    "list-reliable": {"backend": "list", "list_mode": "reliable"},
    "list-blocking": {"backend": "list", "list_mode": "blocking"},
}


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def blocked_clients(redis: Redis, db: int) -> list[str]:
    """Clients of database `db` blocked in a command (CLIENT LIST flag `b`)."""
    clients = await redis.client_list()
    return [c["cmd"] for c in clients if c["db"] == str(db) and "b" in c["flags"]]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_disconnect_stops_the_reader_and_frees_its_connection(
    real_redis: Redis, redis_url: str, backend: str
) -> None:
    db = int(redis_url.rsplit("/", 1)[1])
    settings = load_settings(redis_url=redis_url, **BACKENDS[backend], block_ms=5000, heartbeat=1.0)
    app = create_app(settings)
    async with serving(app) as base_url:
        services: Services = app.state.services
        await services.transport.publish("job-idle", Event("token", {"text": "a"}, ts=1.0))

        async with (
            httpx.AsyncClient(base_url=base_url) as client,
            client.stream("GET", "/stream/job-idle") as response,
        ):
            lines = response.aiter_lines()
            assert [await anext(lines) for _ in range(3)][:2] == ["id: 1", "event: token"]

            async def reader_blocked() -> bool:
                return len(await blocked_clients(real_redis, db)) == 1

            await eventually(reader_blocked)
            assert services.active_readers == 1

        async def reader_gone() -> bool:
            return services.active_readers == 0 and not await blocked_clients(real_redis, db)

        # Within one heartbeat interval, well before the 5 s BLOCK would end on its own.
        await eventually(reader_gone, within=settings.heartbeat)


async def test_reader_over_the_slot_count_gets_503_with_retry_after(
    real_redis: Redis, redis_url: str
) -> None:
    settings = load_settings(redis_url=redis_url, max_connections=2, block_ms=200)
    app = create_app(settings)
    async with serving(app) as base_url:
        services: Services = app.state.services
        await services.transport.publish("job-busy", Event("token", {"text": "a"}, ts=1.0))

        async with (
            httpx.AsyncClient(base_url=base_url, timeout=3) as client,
            client.stream("GET", "/stream/job-busy") as first,
        ):
            lines = first.aiter_lines()  # kept: dropping it would close the response
            assert await anext(lines) == "id: 1"
            second = await client.get("/stream/job-busy")
            status = await client.get("/jobs/job-busy")
            health = await client.get("/healthz")

    assert (first.status_code, second.status_code) == (200, 503)
    assert second.headers["retry-after"] == "1"
    assert second.json() == {
        "detail": "every reader slot is taken (RUNSTREAM_MAX_CONNECTIONS); retry shortly"
    }
    assert (status.status_code, health.status_code) == (404, 200)


async def test_clients_dropping_mid_burst_cause_no_writes_to_a_closed_socket(
    real_redis: Redis, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(redis_url=redis_url, read_count=500)
    app = create_app(settings)
    async with serving(app) as base_url:
        services: Services = app.state.services
        burst = [Event("token", {"text": "x" * 200}, ts=1.0) for _ in range(3000)]
        await services.transport.publish_many("job-burst", burst)
        await services.transport.finish("job-burst", {"tokens": 3000})
        port = int(base_url.rsplit(":", 1)[1])

        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(5):
                await _drop_with_reset_after(port, "/stream/job-burst", 3000)
            await eventually(lambda: _no_readers(services))
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
                whole = await client.get("/stream/job-burst")

    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    ids = [line for line in whole.text.splitlines() if line.startswith("id: ")]
    assert ids == [f"id: {seq}" for seq in range(1, 3002)]


async def _no_readers(services: Services) -> bool:
    return services.active_readers == 0


async def _drop_with_reset_after(port: int, path: str, size: int) -> None:
    """Read `size` bytes of the stream, then drop the connection with a TCP reset."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    await reader.readexactly(size)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
