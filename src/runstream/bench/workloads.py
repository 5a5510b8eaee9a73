"""Workloads inside the benchmark's own process: (a) transport and (c) throughput.

Producer and consumer share one event loop, so a latency is the consumer's `time.time()`
minus the `ts` the producer stamped on the event: one clock, no skew.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.asyncio import Redis

from runstream.bench.scenarios import Channel
from runstream.bench.stats import DeliveryCheck
from runstream.core.errors import RunstreamError
from runstream.core.events import Event

logger = logging.getLogger(__name__)

Advance = Callable[[int], None]

# How long a consumer may still take after its producer has finished before the run is
# cut short and whatever did not arrive counts as lost.
DRAIN_TIMEOUT = 15.0
# A blocking consumer issues its first read in this time, before the first event is sent.
SETTLE_SECONDS = 0.2
# Throughput: the producer waits while it is this many events ahead of the consumer.
THROUGHPUT_WINDOW = 20_000
CANCEL_TIMEOUT = 2.0


class BenchRunError(RunstreamError):
    """A measured run could not even start (its consumer never answered)."""


def _noop(_: int) -> None:
    return None


def token(index: int, padding: str) -> Event:
    return Event("token", {"i": index, "text": padding})


@dataclass(slots=True)
class _Consumer:
    """Reads a channel to `done`, timing and checking each token event.

    Token `i` is index `i` of the delivery check, and `done` is index `sent` (the number of
    tokens the producer sent, set before it sends `done`), so a missing `done` is lost too.
    """

    channel: Channel
    advance: Advance
    sent: int = 0
    check: DeliveryCheck = field(default_factory=DeliveryCheck)
    latencies: list[float] = field(default_factory=list)
    done_at: float = 0.0
    warmed: asyncio.Event = field(default_factory=asyncio.Event)
    progressed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async for event in self.channel.receive():
            now = time.time()
            if event.type == "token":
                self.latencies.append(now - event.ts)
                self.check.add(int(event.payload["i"]))
                self.progressed.set()
                self.advance(1)
            elif event.type == "custom":
                self.warmed.set()
            elif event.type == "done":
                self.check.add(self.sent)
                self.done_at = time.perf_counter()
                return
            else:
                logger.warning(
                    "%s: consumer got %s %s", self.channel.name, event.type, event.payload
                )

    def result(self) -> DeliveryCheck:
        self.check.expected = self.sent + 1
        return self.check


async def _until(flag: asyncio.Event, task: asyncio.Task[None], seconds: float) -> bool:
    """Wait until `flag` is set, `task` ends or `seconds` pass; True if `flag` is set."""
    waiter = asyncio.create_task(flag.wait())
    await asyncio.wait({waiter, task}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    return flag.is_set()


async def _start(channel: Channel, consumer: _Consumer) -> asyncio.Task[None]:
    """Start the consumer and pass one warm-up event, so connections and scripts are ready."""
    task = asyncio.create_task(consumer.run())
    await asyncio.sleep(SETTLE_SECONDS)
    await channel.publish([Event("custom", {"warmup": True})])
    if not await _until(consumer.warmed, task, DRAIN_TIMEOUT):
        await _stop(task, channel.name)
        raise BenchRunError(f"{channel.name}: the consumer never received the warm-up event")
    await asyncio.sleep(SETTLE_SECONDS)
    return task


async def _drain(task: asyncio.Task[None], name: str) -> None:
    """Wait for the consumer to reach `done`; past the timeout, stop it: the rest is lost."""
    await asyncio.wait({task}, timeout=DRAIN_TIMEOUT)
    if not task.done():
        logger.error("%s: consumer did not reach done within %.0f s", name, DRAIN_TIMEOUT)
        await _stop(task, name)
    elif task.exception() is not None:
        logger.error("%s: consumer failed: %r", name, task.exception())


async def _stop(task: asyncio.Task[None], name: str) -> None:
    # Bounded: a task that swallows its cancellation must not hang the benchmark.
    task.cancel()
    await asyncio.wait({task}, timeout=CANCEL_TIMEOUT)
    if not task.done():
        logger.error("%s: consumer ignored its cancellation; left behind", name)


async def run_paced(
    channel: Channel, count: int, rate: float, payload_bytes: int, advance: Advance = _noop
) -> tuple[list[float], DeliveryCheck, float]:
    """(a) Publish `count` token events at `rate` per second, one per round trip.

    Returns the latencies, the delivery check and the elapsed seconds.
    """
    consumer = _Consumer(channel, advance, sent=count)
    task = await _start(channel, consumer)
    padding = "x" * payload_bytes

    start = time.perf_counter()
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await channel.publish([token(index, padding)])
    await channel.finish()
    await _drain(task, channel.name)
    return consumer.latencies, consumer.result(), time.perf_counter() - start


async def run_throughput(
    channel: Channel, duration: float, batch: int, payload_bytes: int, advance: Advance = _noop
) -> tuple[list[float], DeliveryCheck, float]:
    """(c) Publish batches of `batch` events with one round trip each, for `duration` s.

    The producer never runs more than `THROUGHPUT_WINDOW` events ahead of the consumer,
    so the figure is what both sustain together, not how fast Redis can buffer.
    """
    consumer = _Consumer(channel, advance)
    task = await _start(channel, consumer)
    padding = "x" * payload_bytes

    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration and not task.done():
        while sent - consumer.check.received > THROUGHPUT_WINDOW and not task.done():
            consumer.progressed.clear()
            if not await _until(consumer.progressed, task, DRAIN_TIMEOUT):
                break
        await channel.publish([token(sent + i, padding) for i in range(batch)])
        sent += batch
    consumer.sent = sent
    await channel.finish()
    await _drain(task, channel.name)
    end = consumer.done_at or time.perf_counter()
    return consumer.latencies, consumer.result(), end - start


async def run_ping(
    redis_url: str, count: int, rate: float, advance: Advance = _noop
) -> tuple[list[float], float]:
    """The PING round trip, paced like the transport workload; returns latencies, elapsed."""
    redis = Redis.from_url(redis_url, socket_timeout=10)
    try:
        await redis.ping()
        latencies = []
        start = time.perf_counter()
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            await redis.ping()
            latencies.append(time.perf_counter() - sent)
            advance(1)
        return latencies, time.perf_counter() - start
    finally:
        await redis.aclose()
