"""The paths an event can take from a producer to a consumer, one `Channel` per scenario.

- `floor-xread`: raw redis-py XADD to an XREAD BLOCK loop, none of runstream's code: the
  fastest a blocking consumer can be told of an event on this Redis.
- `naive`: RPUSH, and a consumer that LPOPs one event and sleeps a fixed 100 ms whenever
  the list is empty: the textbook design most projects start from.
- `list-poll`, `list-blocking`, `list-reliable`, `streams`: runstream's transport.

The PING round trip (`floor-ping`) is not a channel; `workloads.measure_ping` takes it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis

from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.core.settings import Settings, load_settings
from runstream.core.transport import Transport, open_transport

BACKENDS = ("list-poll", "list-blocking", "list-reliable", "streams")
FLOOR_PING = "floor-ping"
FLOOR_XREAD = "floor-xread"
NAIVE = "naive"
REFERENCES = (FLOOR_PING, FLOOR_XREAD, NAIVE)
KEY_PREFIX = "rsbench"
NAIVE_SLEEP = 0.1
# The bench keeps every event it sends: a trimmed event would show up as lost.
MAX_LEN = 10_000_000


def backend_settings(backend: str, redis_url: str, **overrides: Any) -> Settings:
    """Settings for one of `BACKENDS` on `redis_url`, under the benchmark's key prefix."""
    if backend == "streams":
        choice: dict[str, Any] = {"backend": "streams"}
    elif backend.startswith("list-"):
        choice = {"backend": "list", "list_mode": backend.removeprefix("list-")}
    else:
        raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    return load_settings(
        redis_url=redis_url, key_prefix=KEY_PREFIX, max_len=MAX_LEN, **choice, **overrides
    )


class Channel(ABC):
    """One job's path from producer to consumer, for one scenario."""

    name: str

    @abstractmethod
    async def publish(self, events: Sequence[Event]) -> None:
        """Send `events` in one round trip."""

    @abstractmethod
    async def finish(self) -> None:
        """Send the job's `done` event."""

    @abstractmethod
    def receive(self) -> AsyncIterator[Event]:
        """Yield the job's events in order, ending after `done`."""

    @abstractmethod
    def keys(self) -> list[str]:
        """The Redis keys this channel wrote, deleted once the run is measured."""

    @abstractmethod
    async def aclose(self) -> None: ...


class TransportChannel(Channel):
    """runstream's transport for one backend."""

    def __init__(self, settings: Settings, job_id: str) -> None:
        self.name = settings.backend_name
        self.job_id = job_id
        self.transport: Transport = open_transport(settings)
        self._keys = settings_keys(settings, job_id)

    async def publish(self, events: Sequence[Event]) -> None:
        if len(events) == 1:
            await self.transport.publish(self.job_id, events[0])
        else:
            await self.transport.publish_many(self.job_id, events)

    async def finish(self) -> None:
        await self.transport.finish(self.job_id)

    def receive(self) -> AsyncIterator[Event]:
        return self.transport.read(self.job_id)

    def keys(self) -> list[str]:
        return self._keys

    async def aclose(self) -> None:
        await self.transport.aclose()


def settings_keys(settings: Settings, job_id: str) -> list[str]:
    return list(KeySpace(settings.key_prefix).job(job_id).all)


class _RawChannel(Channel):
    """A scenario written straight on redis-py; it numbers events itself."""

    def __init__(self, redis_url: str, job_id: str, block_ms: int) -> None:
        self.redis = Redis.from_url(redis_url, socket_timeout=block_ms / 1000 + 5)
        self.key = f"{KEY_PREFIX}:{{{job_id}}}:{self.name}"
        self.block_ms = block_ms
        self._seq = 0

    def _number(self, events: Sequence[Event]) -> list[str]:
        numbered = []
        for event in events:
            self._seq += 1
            numbered.append(dataclasses.replace(event, seq=self._seq).to_json())
        return numbered

    async def finish(self) -> None:
        await self.publish([Event("done")])

    def keys(self) -> list[str]:
        return [self.key]

    async def aclose(self) -> None:
        await self.redis.aclose()


class FloorChannel(_RawChannel):
    """XADD -> XREAD BLOCK from the last ID received, with nothing else around it."""

    name = FLOOR_XREAD

    async def publish(self, events: Sequence[Event]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in self._number(events):
                pipe.xadd(self.key, {"e": entry})
            await pipe.execute()

    async def receive(self) -> AsyncIterator[Event]:
        last_id: bytes | str = "0-0"
        while True:
            reply: Any = await self.redis.xread({self.key: last_id}, count=500, block=self.block_ms)
            if not reply:
                continue
            for entry_id, fields in reply[0][1]:
                last_id = entry_id
                event = Event.from_json(fields[b"e"])
                yield event
                if event.type == "done":
                    return


class NaiveChannel(_RawChannel):
    """RPUSH; LPOP one event at a time, sleeping a fixed 100 ms when the list is empty."""

    name = NAIVE

    async def publish(self, events: Sequence[Event]) -> None:
        await self.redis.rpush(self.key, *self._number(events))

    async def receive(self) -> AsyncIterator[Event]:
        while True:
            raw: Any = await self.redis.lpop(self.key)
            if raw is None:
                await asyncio.sleep(NAIVE_SLEEP)
                continue
            event = Event.from_json(raw)
            yield event
            if event.type == "done":
                return


def open_channel(scenario: str, redis_url: str, job_id: str, block_ms: int = 2000) -> Channel:
    """The channel of `scenario` (a backend, `floor-xread` or `naive`) for job `job_id`."""
    if scenario == FLOOR_XREAD:
        return FloorChannel(redis_url, job_id, block_ms)
    if scenario == NAIVE:
        return NaiveChannel(redis_url, job_id, block_ms)
    return TransportChannel(backend_settings(scenario, redis_url, block_ms=block_ms), job_id)
