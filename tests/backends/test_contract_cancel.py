"""Contract: consumers cancelled at random points (an HTTP client going away) lose nothing
they had not delivered (replay modes), and never leave a half-read reply in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from backends.support import Case
from runstream.core.events import Event
from runstream.core.transport import Transport

CANCELS = 500


async def produce_until(transport: Transport, stop: asyncio.Event, rng: random.Random) -> int:
    sent = 0
    while not stop.is_set():
        size = rng.randint(1, 3)
        await transport.publish_many(
            "cancel", [Event("token", {"i": sent + k}) for k in range(size)]
        )
        sent += size
        await asyncio.sleep(rng.choice([0, 0.0005, 0.002]))
    return await transport.finish("cancel")


async def cancel_one(consumer: asyncio.Task[None], attempt: int, rng: random.Random) -> None:
    await asyncio.sleep(rng.choice([0, 0, rng.uniform(0, 0.004)]))
    consumer.cancel()
    # A cancel swallowed inside the client would leave this consumer reading on.
    await asyncio.wait([consumer], timeout=2)
    assert consumer.done(), f"consumer {attempt} kept running after cancel()"
    with contextlib.suppress(asyncio.CancelledError):
        await consumer


async def test_cancelled_consumers_deliver_each_event_once(case: Case) -> None:
    # Production's client (pool of 4, hiredis, socket timeout above BLOCK) on the real
    # server: a connection a cancel failed to release would exhaust the pool quickly.
    pool = case.pool(max_connections=4)
    transport = case.transport(redis=pool, idle_timeout=5.0)
    rng = random.Random(20261204)
    delivered: list[Event] = []

    async def consume() -> None:
        stored = [e.seq for e in delivered if e.is_stored]
        async for event in transport.read("cancel", after=stored[-1] if stored else 0):
            delivered.append(event)

    stop = asyncio.Event()
    producer = asyncio.create_task(produce_until(transport, stop, rng))
    try:
        for attempt in range(CANCELS):
            await cancel_one(asyncio.create_task(consume()), attempt, rng)
            probe = f"probe:{attempt}:{rng.random()}"
            assert await pool.set(probe, probe) is True
            assert await pool.get(probe) == probe.encode()
    finally:
        stop.set()  # on failure too: `done` ends any consumer that escaped its cancel
        done_seq = await producer
    await consume()

    stored = [e.seq for e in delivered if e.is_stored]
    gaps = [e.payload for e in delivered if e.type == "gap"]
    assert delivered[-1].type == "done"
    assert [e.type for e in delivered if e.type not in ("token", "gap")] == ["done"]
    if case.replays:
        assert stored == list(range(1, done_seq + 1))
        assert gaps == []
    else:
        # poll and blocking pop before delivering: a cancel may lose what was popped, and
        # the next consumer reports it as a gap. Every seq is delivered or reported once.
        assert stored == sorted(set(stored))
        missing = [s for g in gaps for s in range(g["first"], g["last"] + 1)]
        assert sorted(stored + missing) == list(range(1, done_seq + 1))
