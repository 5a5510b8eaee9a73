"""An API reading where its workers do not write: /healthz says so, and so does the stream."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from e2e.support import Procs, submit
from migration.support import PHASES, TEST_SETTINGS, Transports, tokens
from runstream.api import create_app
from runstream.core.settings import load_settings
from runstream.migrate.compat import WorkerRegistry
from runstream.worker.queue import JobQueue

MakeApi = Callable[..., Awaitable[httpx.AsyncClient]]
HEALTH_DETAIL = (
    "1 live workers write where this API does not read (list); give API and workers the same "
    "RUNSTREAM_BACKEND and RUNSTREAM_DUAL_WRITE, or follow docs/migration.md"
)


@pytest.fixture
async def make_api(redis_client: Redis) -> AsyncIterator[MakeApi]:
    async with AsyncExitStack() as stack:

        async def make(phase: str) -> httpx.AsyncClient:
            app = create_app(load_settings(**TEST_SETTINGS, **PHASES[phase]), redis_client)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://runstream.test")
            return await stack.enter_async_context(client)

        yield make


def _frames(text: str) -> list[dict[str, Any]]:
    frames = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        frames.append({**fields, "data": json.loads(fields["data"])})
    return frames


async def _announce(transports: Transports, phase: str, name: str) -> None:
    await WorkerRegistry(transports.redis, transports.settings(phase)).announce(name)


async def test_healthz_names_workers_the_api_cannot_read(
    make_api: MakeApi, transports: Transports
) -> None:
    await _announce(transports, "streams", "worker-s")
    await _announce(transports, "dual-list", "worker-d")
    stale = {"writes": "stream", "backend": "streams", "until": time.time() - 1}
    await transports.redis.hset("rs:workers", "worker-gone", json.dumps(stale))
    api = await make_api("list")

    health = (await api.get("/healthz")).json()

    assert health == {
        "redis": "ok",
        "backend": "list-reliable",
        "reads": "list",
        "workers": {"stream": 1, "list+stream": 1},
        "backend_mismatch": {"workers": ["worker-s"], "detail": HEALTH_DETAIL},
    }
    assert await transports.redis.hkeys("rs:workers") in (
        [b"worker-s", b"worker-d"],
        [b"worker-d", b"worker-s"],
    )


async def test_healthz_of_a_dual_write_api_reads_every_worker(
    make_api: MakeApi, transports: Transports
) -> None:
    await _announce(transports, "streams", "worker-s")
    await _announce(transports, "list", "worker-l")
    api = await make_api("dual-streams")

    health = (await api.get("/healthz")).json()

    assert health == {
        "redis": "ok",
        "backend": "streams",
        "reads": "list+stream",
        "workers": {"stream": 1, "list": 1},
    }


async def test_a_job_written_to_streams_read_by_a_list_api_ends_with_an_error(
    make_api: MakeApi, transports: Transports
) -> None:
    api = await make_api("list")
    streams = transports.settings("streams")
    await JobQueue(transports.redis, streams).submit("job-1", {"prompt": "p"})
    await JobQueue(transports.redis, streams).mark_running("job-1", "worker-s")
    await tokens(transports("streams"), "job-1", "ab")

    response = await api.get("/stream/job-1")

    assert response.status_code == 200
    [frame] = _frames(response.text)
    assert "id" not in frame
    assert (frame["event"], frame["data"]["seq"]) == ("error", 0)
    assert frame["data"]["payload"] == {
        "reason": "backend_mismatch",
        "writer": "stream",
        "reader": "list",
        "message": (
            "this job's events are written to stream but this API reads list; set the same "
            "RUNSTREAM_BACKEND (and RUNSTREAM_DUAL_WRITE) on API and workers"
        ),
    }


async def test_a_queued_job_no_live_worker_can_serve_ends_with_an_error(
    make_api: MakeApi, transports: Transports
) -> None:
    api = await make_api("streams")
    await _announce(transports, "list", "worker-l")
    await JobQueue(transports.redis, transports.settings("list")).submit("job-1", {"prompt": "p"})

    [frame] = _frames((await api.get("/stream/job-1")).text)

    assert frame["event"] == "error"
    assert frame["data"]["payload"]["reason"] == "backend_mismatch"
    assert (frame["data"]["payload"]["writer"], frame["data"]["payload"]["reader"]) == (
        "list",
        "stream",
    )


async def test_a_list_job_copied_to_its_stream_is_served_by_a_streams_api(
    make_api: MakeApi, transports: Transports
) -> None:
    lists = transports.settings("list")
    await JobQueue(transports.redis, lists).submit("job-1", {"prompt": "p"})
    await JobQueue(transports.redis, lists).mark_running("job-1", "worker-l")
    await tokens(transports("list"), "job-1", "ab")
    await transports("list").finish("job-1")
    await transports.migrate("streams")
    api = await make_api("streams")

    frames = _frames((await api.get("/stream/job-1")).text)

    assert [(f["id"], f["event"]) for f in frames] == [
        ("1", "token"),
        ("2", "token"),
        ("3", "done"),
    ]


@pytest.mark.slow
def test_processes_with_different_backends_report_the_mismatch(
    redis_url: str, tmp_path: Path
) -> None:
    import os

    import redis

    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(RUNSTREAM_REDIS_URL=redis_url, RUNSTREAM_BLOCK_MS="200")
    procs = Procs(env, tmp_path)
    try:
        worker = procs.worker(env={"RUNSTREAM_BACKEND": "streams"})
        api = procs.api(env={"RUNSTREAM_BACKEND": "list"})
        job_id = submit(api, "p")
        deadline = time.monotonic() + 20
        while b"taking jobs" not in worker.log.read_bytes():
            assert time.monotonic() < deadline, worker.output()
            time.sleep(0.05)
        health = httpx.get(f"{api.base_url}/healthz", timeout=5).json()
        stream = httpx.get(f"{api.base_url}/stream/{job_id}", timeout=20)
    finally:
        procs.stop_all()

    assert health["backend_mismatch"]["workers"] == [worker_name(worker.output())]
    [frame] = _frames(stream.text)
    assert frame["event"] == "error"
    payload = frame["data"]["payload"]
    assert (payload["reason"], payload["writer"], payload["reader"]) == (
        "backend_mismatch",
        "stream",
        "list",
    )


def worker_name(log: str) -> str:
    """The name a worker logged as `worker <name>: taking jobs ...`."""
    match = re.search(r"worker (\S+): taking jobs", log)
    assert match is not None, log
    return match[1]
