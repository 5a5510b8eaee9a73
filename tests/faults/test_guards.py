"""The reader claim of the popping list modes, and readers ending an orphaned job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from runstream.backends.guards import ORPHAN_MESSAGE
from runstream.core.errors import ReaderConflict
from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.core.settings import load_settings
from runstream.core.transport import Transport, open_transport

MODES = {
    "list-poll": {"backend": "list", "list_mode": "poll"},
    "list-blocking": {"backend": "list", "list_mode": "blocking"},
    "list-reliable": {"backend": "list", "list_mode": "reliable"},
    "streams": {"backend": "streams"},
}
FAST = {"block_ms": 50, "poll_interval_max": 0.01, "idle_timeout": 1.5}


def transport_for(client: Redis, mode: str, **overrides: int) -> Transport:
    return open_transport(load_settings(**MODES[mode], **FAST, **overrides), client)


async def drain(events: AsyncIterator[Event]) -> list[tuple[str, int]]:
    return [(e.type, e.seq) async for e in events]


@pytest.mark.parametrize("mode", ["list-poll", "list-blocking"])
async def test_a_second_reader_of_a_popping_mode_is_refused_until_the_first_stops(
    client: Redis, mode: str
) -> None:
    transport = transport_for(client, mode, read_count=1)  # pop one event at a time
    await transport.publish_many("one", [Event("token", {"i": i}) for i in range(3)])
    first = await transport.open_read("one")
    assert (await anext(first)).seq == 1

    with pytest.raises(ReaderConflict) as refused:
        await transport.open_read("one")
    library_reader = transport.read("one")
    with pytest.raises(ReaderConflict):
        await anext(library_reader)
    await first.aclose()  # type: ignore[attr-defined]
    await transport.finish("one")
    second = await transport.open_read("one")

    assert f"backend {mode} removes events as it reads them" in str(refused.value)
    # Seq 1 went to the first reader; the second is told so with a gap.
    assert await drain(second) == [("gap", 0), ("token", 2), ("token", 3), ("done", 4)]
    assert await client.exists(KeySpace().job("one").reader) == 0


@pytest.mark.parametrize("mode", ["list-reliable", "streams"])
async def test_modes_that_keep_events_take_no_claim(client: Redis, mode: str) -> None:
    transport = transport_for(client, mode)
    await transport.publish("many", Event("token", {"i": 0}))
    await transport.finish("many")

    readers = [await transport.open_read("many") for _ in range(3)]

    for reader in readers:
        assert await drain(reader) == [("token", 1), ("done", 2)]
    assert await client.exists(KeySpace().job("many").reader) == 0


async def running_job(client: Redis, transport: Transport, job_id: str, *, lease: bool) -> None:
    keys = KeySpace().job(job_id)
    await client.hset(keys.meta, mapping={"status": "running"})
    if lease:
        await client.set(keys.lease, "worker-1", px=60_000)
    await transport.publish_many(job_id, [Event("token", {"i": i}, "t-1") for i in range(3)])


@pytest.mark.parametrize("mode", list(MODES))
async def test_readers_end_a_job_whose_lease_is_gone_exactly_once(client: Redis, mode: str) -> None:
    transport = transport_for(client, mode)
    await running_job(client, transport, "orphan", lease=False)
    keys = KeySpace().job("orphan")

    if mode in ("list-poll", "list-blocking"):
        received = [await drain(transport.read("orphan"))]
    else:
        received = await asyncio.gather(*(drain(transport.read("orphan")) for _ in range(3)))
    events = [e async for e in transport.read("orphan", after=3)] if mode == "streams" else []

    for outline in received:
        assert outline == [("token", 1), ("token", 2), ("token", 3), ("error", 4), ("done", 5)]
    assert await client.get(keys.seq) == b"5"
    assert await client.hget(keys.meta, "status") == b"failed"
    assert await client.ttl(keys.seq) > 0
    if events:
        assert dict(events[0].payload) == {
            "reason": "producer_lost",
            "message": ORPHAN_MESSAGE,
            "after_seq": 3,
        }
        assert dict(events[1].payload) == {"events": 3}
        assert {e.trace_id for e in events} == {"t-1"}


@pytest.mark.parametrize("mode", ["streams", "list-reliable"])
async def test_a_job_with_a_live_lease_is_left_alone(client: Redis, mode: str) -> None:
    transport = transport_for(client, mode)
    await running_job(client, transport, "alive", lease=True)

    received = await drain(transport.read("alive"))

    assert received == [("token", 1), ("token", 2), ("token", 3), ("error", 0)]  # idle timeout
    assert await client.get(KeySpace().job("alive").seq) == b"3"
