"""The transport over a Redis list: RPUSH to publish, three ways to consume.

`RUNSTREAM_LIST_MODE` picks the consumer:

- `poll`: LPOP with COUNT, sleeping with exponential backoff while the list is empty
  and back to the shortest sleep as soon as an event arrives.
- `blocking`: BLMPOP with COUNT (https://redis.io/docs/latest/commands/blmpop/); no polling.
- `reliable`: one Lua script moves new events from the list into the job's `log` list (an
  LMOVE with a count, https://redis.io/docs/latest/commands/lmove/) and, in the same atomic
  step, returns the log's events after the consumer's seq. The log keeps events until the
  job's TTL (capped at `max_len`), so a consumer that took an event but never delivered it
  (it was cancelled, or its process died) leaves it in the log for the next consumer, which
  resumes after the last seq it delivered; several consumers may read one job at once.

`poll` and `blocking` remove events as they read them: one consumer per job (a second
one gets `ReaderConflict`, see `runstream.backends.guards`), no replay, and events popped by
a consumer that is cancelled before delivering them are lost (the next consumer reports them
as a `gap`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any, cast

from redis.asyncio import Redis

from runstream.backends.base import MAX_EVENTS_PER_SCRIPT, Batch, RedisTransport
from runstream.core.keys import JobKeys
from runstream.core.settings import Settings

# KEYS: list, log, seq. ARGV: count, cap, after, skip.
# Moves up to `count` events from the list to the log (capping the log and giving it the TTL
# the job's seq key has once `finish` set one), then returns {start, entries}: up to `count`
# log entries from index `start`, the first entry past the last one with seq <= `after`,
# plus `skip` (malformed entries the consumer already saw there). Entries whose seq cannot
# be read are kept in order but never used to locate a seq.
_READ_LOG = """
local count, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local after, skip = tonumber(ARGV[3]), tonumber(ARGV[4])
local list, log = KEYS[1], KEYS[2]

local moved = redis.call('LRANGE', list, 0, count - 1)
if #moved > 0 then
  redis.call('LTRIM', list, #moved, -1)
  redis.call('RPUSH', log, unpack(moved))
  redis.call('LTRIM', log, -cap, -1)
  local ttl = redis.call('PTTL', KEYS[3])
  if ttl > 0 then redis.call('PEXPIRE', log, ttl) end
end

local function seq_at(i)
  local entry = redis.call('LINDEX', log, i)
  local seq = entry and string.match(entry, '^{"seq":(%d+),')
  return seq and tonumber(seq)
end

local function readable_at_or_before(i)
  while i >= 0 do
    local seq = seq_at(i)
    if seq then return i, seq end
    i = i - 1
  end
  return -1, 0
end

local n = redis.call('LLEN', log)
local last = -1
local head = seq_at(0)
if head and after < head then
  last = -1
elseif head and after - head < n and seq_at(after - head) == after then
  last = after - head
else
  local lo, hi = -1, n
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local index, seq = readable_at_or_before(mid)
    if seq <= after then lo, last = mid, index else hi = mid end
  end
end
local start = last + 1 + skip
return {start, redis.call('LRANGE', log, start, start + count - 1)}
"""

_STORED_SEQ = re.compile(rb'^\{"seq":(\d+),')


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
        self.single_reader = self.mode != "reliable"
        self._read_log_script = self.redis.register_script(_READ_LOG)

    def _data_key(self, keys: JobKeys) -> str:
        return keys.list

    def _batches(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        if self.mode == "poll":
            return self._poll(keys)
        if self.mode == "blocking":
            return self._pop_blocking(keys)
        return self._read_log(keys, after)

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

    async def _read_log(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        timeout = self.settings.block_ms / 1000
        skip = 0
        while True:
            start, items = await self._log_after(keys, after, skip)
            if items:
                for raw in items:
                    seq = _stored_seq(raw)
                    after, skip = (seq, 0) if seq > after else (after, skip + 1)
                yield [(f"{keys.log}[{start + i}]", raw) for i, raw in enumerate(items)]
                continue
            # Wait for the list to fill without taking anything from it: popping the tail
            # and pushing it back is a no-op, so a cancelled wait loses no event and leaves
            # no key without its TTL. redis-py types the timeout as int; Redis takes floats.
            wait_s = cast(int, timeout)
            woke = await self.redis.blmove(keys.list, keys.list, wait_s, "RIGHT", "RIGHT")
            if woke is None:
                yield []

    async def _log_after(self, keys: JobKeys, after: int, skip: int) -> tuple[int, list[bytes]]:
        count = min(self.settings.read_count, MAX_EVENTS_PER_SCRIPT)
        args = [count, self.settings.max_len, after, skip]
        reply: Any = await self._read_log_script(keys=[keys.list, keys.log, keys.seq], args=args)
        return int(reply[0]), list(reply[1])


def _stored_seq(raw: bytes) -> int:
    """The seq the publish script wrote at the start of `raw`, or 0 if it is malformed."""
    match = _STORED_SEQ.match(raw)
    return int(match[1]) if match else 0


def _batch(key: str, items: list[bytes]) -> Batch:
    return [(key, raw) for raw in items]
