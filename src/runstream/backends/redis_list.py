"""The transport over a Redis list: RPUSH to publish, three ways to consume.

`RUNSTREAM_LIST_MODE` picks the consumer:

- `poll`: LPOP with COUNT, sleeping with exponential backoff while the list is empty
  and back to the shortest sleep as soon as an event arrives.
- `blocking`: BLMPOP with COUNT (https://redis.io/docs/latest/commands/blmpop/); no polling.
- `reliable`: events move atomically from the list into the job's `log` list
  (LMOVE, https://redis.io/docs/latest/commands/lmove/) and are read from there. The log
  keeps them until the job's TTL, so an event a consumer took but never delivered (it was
  cancelled, or its process died) is read again by the next consumer, which resumes after
  the last seq it delivered.

`poll` and `blocking` remove events as they read them: one consumer per job, no replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from runstream.backends.base import MAX_EVENTS_PER_SCRIPT, Batch, RedisTransport
from runstream.core.errors import InvalidEvent
from runstream.core.events import Event
from runstream.core.keys import JobKeys
from runstream.core.settings import Settings

# Move up to ARGV[1] events from the list to the log, cap the log, and give the log the
# TTL the job's seq key has (set by `finish`), since the log may be created after it.
_MOVE = """
local items = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], #items, -1)
  redis.call('RPUSH', KEYS[2], unpack(items))
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
end
local ttl = redis.call('PTTL', KEYS[3])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return items
"""


class Backoff:
    """Sleep intervals that grow from `first` by `multiplier` up to `ceiling`."""

    def __init__(self, first: float, multiplier: float, ceiling: float) -> None:
        self.first, self.multiplier, self.ceiling = first, multiplier, ceiling
        self._next = first

    def next(self) -> float:
        interval = self._next
        self._next = min(self._next * self.multiplier, self.ceiling)
        return interval

    def reset(self) -> None:
        self._next = self.first


class ListTransport(RedisTransport):
    """Redis list backend (`RUNSTREAM_BACKEND=list`)."""

    _kind = "list"

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        super().__init__(settings, redis)
        self.mode = settings.list_mode
        self.name = f"list-{self.mode}"
        self._move_script = self.redis.register_script(_MOVE)

    def _data_key(self, keys: JobKeys) -> str:
        return keys.list

    def _batches(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        if self.mode == "poll":
            return self._poll(keys)
        if self.mode == "blocking":
            return self._pop_blocking(keys)
        return self._move_reliably(keys, after)

    async def _poll(self, keys: JobKeys) -> AsyncIterator[Batch]:
        s = self.settings
        backoff = Backoff(s.poll_interval_min, s.poll_multiplier, s.poll_interval_max)
        while True:
            items: Any = await self.redis.lpop(keys.list, s.read_count)
            if items:
                backoff.reset()
                yield _batch(keys.list, items)
            else:
                yield []
                await asyncio.sleep(backoff.next())

    async def _pop_blocking(self, keys: JobKeys) -> AsyncIterator[Batch]:
        timeout = self.settings.block_ms / 1000
        while True:
            reply: Any = await self.redis.blmpop(
                timeout, 1, keys.list, direction="LEFT", count=self.settings.read_count
            )
            yield _batch(keys.list, reply[1]) if reply else []

    async def _move_reliably(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        async for batch in self._replay_log(keys, after):
            yield batch

        timeout = self.settings.block_ms / 1000
        while True:
            items = await self._move(keys)
            if not items:
                # redis-py types the timeout as int; BLMOVE takes fractional seconds.
                moved: Any = await self.redis.blmove(keys.list, keys.log, timeout)  # type: ignore[arg-type]
                # Move the rest of a burst too, and give the log its TTL if the job is done.
                items = [moved, *await self._move(keys)] if moved is not None else []
            yield _batch(keys.log, items)

    async def _move(self, keys: JobKeys) -> list[bytes]:
        count = min(self.settings.read_count, MAX_EVENTS_PER_SCRIPT)
        args = [count, self.settings.max_len]
        items: list[bytes] = await self._move_script(
            keys=[keys.list, keys.log, keys.seq], args=args
        )
        return items

    async def _replay_log(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        """Yield what earlier consumers moved to the log, from the first seq after `after`."""
        head = await self.redis.lindex(keys.log, 0)
        if head is None:
            return
        try:
            start = max(0, after - Event.from_json(head).seq + 1)
        except InvalidEvent:
            start = 0

        count = self.settings.read_count
        while True:
            items: Any = await self.redis.lrange(keys.log, start, start + count - 1)
            if not items:
                return
            yield _batch(keys.log, items)
            start += len(items)


def _batch(key: str, items: list[bytes]) -> Batch:
    return [(key, raw) for raw in items]
