"""Producer retries: a publish whose reply was lost is not written twice; a job whose data
Redis lost is refused instead of restarting its seq."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from runstream.backends.base import RedisTransport
from runstream.core.errors import JobDataLost, JobFinished
from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.core.settings import load_settings
from runstream.core.transport import open_transport

BACKENDS = {
    "streams": {"backend": "streams"},
    "list-reliable": {"backend": "list", "list_mode": "reliable"},
}


def transport_for(client: Redis, backend: str) -> RedisTransport:
    transport = open_transport(load_settings(**BACKENDS[backend]), client)
    assert isinstance(transport, RedisTransport)
    return transport


async def stored_seqs(client: Redis, backend: str, job_id: str) -> list[int]:
    keys = KeySpace().job(job_id)
    if backend == "streams":
        raw = [fields[b"e"] for _, fields in await client.xrange(keys.stream)]
    else:
        raw = await client.lrange(keys.list, 0, -1)
    return [Event.from_json(entry).seq for entry in raw]


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_retry_after_a_lost_reply_writes_the_batch_once(client: Redis, backend: str) -> None:
    transport = transport_for(client, backend)
    await transport.publish("retry", Event("token", {"i": 0}))
    real_script = transport._publish_script
    calls: list[int] = []

    async def runs_then_loses_reply(**kwargs: Any) -> Any:
        result = await real_script(**kwargs)
        calls.append(int(result))
        if len(calls) == 1:
            raise RedisConnectionError("connection lost after the script ran")
        return result

    transport._publish_script = runs_then_loses_reply  # type: ignore[assignment]
    seqs = await transport.publish_many("retry", [Event("token", {"i": i}) for i in (1, 2, 3)])
    transport._publish_script = real_script
    done = await transport.finish("retry")

    assert calls == [2, 2]  # the retry was answered from the batch key, not written again
    assert seqs == [2, 3, 4]
    assert done == 5
    assert await stored_seqs(client, backend, "retry") == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_publish_to_a_job_redis_lost_raises_and_writes_nothing(
    client: Redis, backend: str
) -> None:
    transport = transport_for(client, backend)
    await transport.publish_many("lost", [Event("token", {"i": i}) for i in range(3)])
    await client.flushdb()  # what a restart without persistence leaves

    with pytest.raises(JobDataLost) as caught:
        await transport.publish("lost", Event("token", {"i": 3}))

    assert str(caught.value) == (
        "job 'lost': Redis no longer has its events up to seq 3 (restarted without its data, "
        "or the job expired); the job cannot continue"
    )
    assert await client.keys("*") == []


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_a_job_has_one_done(client: Redis, backend: str) -> None:
    producer, stalled = transport_for(client, backend), transport_for(client, backend)
    await stalled.publish("once", Event("token", {"i": 0}))
    assert await producer.finish("once", error={"reason": "producer_lost"}) == 3

    with pytest.raises(JobFinished) as caught:
        await stalled.finish("once", {"events": 1})

    assert str(caught.value) == "job 'once' already has its done event; nothing was written"
    assert await stored_seqs(client, backend, "once") == [1, 2, 3]
