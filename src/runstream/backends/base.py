"""What every Redis backend shares: seq assignment on publish, and the consumer's rules.

Seq is assigned inside Redis by one Lua script: INCRBY on the job's `seq` key, then the
write (RPUSH or XADD with the explicit ID `0-<seq>`), in one atomic step. Two producers of
one job (a retried worker, say) therefore never write the same seq, and the stored JSON
already carries its seq, so every backend stores byte-identical events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any, cast

from redis.asyncio import Redis

from runstream.core.errors import InvalidEvent
from runstream.core.events import Event, gap
from runstream.core.keys import JobKeys, KeySpace
from runstream.core.redis_client import connect_redis
from runstream.core.settings import Settings

logger = logging.getLogger(__name__)

# Lua's unpack() and a script's reply both have limits; larger batches go in chunks.
MAX_EVENTS_PER_SCRIPT = 1000

_PUBLISH = """
local kind, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #ARGV - 3
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
local entries = {}
for i = 1, n do
  local seq = string.format('%d', first + i - 1)
  local entry = '{"seq":' .. seq .. ',' .. ARGV[i + 3]
  if kind == 'stream' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', cap, '0-' .. seq, 'e', entry)
  else
    entries[i] = entry
  end
end
if kind == 'list' then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  redis.call('LTRIM', KEYS[2], -cap, -1)
end
if ttl > 0 then
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
else
  -- A late publish to a finished job (a retried worker) must not leave a data key that
  -- never expires, as RPUSH to a list its consumer emptied would.
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then redis.call('PEXPIRE', KEYS[2], left) end
end
return first
"""

Batch = list[tuple[str, bytes]]
"""Raw entries of one read: (position for error messages, stored JSON)."""


class RedisTransport(ABC):
    """The transport contract over one Redis data structure; see `Transport`."""

    name: str
    _kind: str  # the publish script's write: "list" or "stream"

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.redis = redis if redis is not None else connect_redis(settings)
        self._owns_redis = redis is None
        self._publish_script = self.redis.register_script(_PUBLISH)

    async def publish(self, job_id: str, event: Event) -> int:
        return (await self.publish_many(job_id, [event]))[0]

    async def publish_many(self, job_id: str, events: Sequence[Event]) -> list[int]:
        return await self._write(self.keys.job(job_id), events, ttl=0)

    async def finish(
        self,
        job_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        error: Mapping[str, Any] | None = None,
        trace_id: str = "",
    ) -> int:
        events = [Event("error", error, trace_id)] if error is not None else []
        events.append(Event("done", payload or {}, trace_id))
        seqs = await self._write(self.keys.job(job_id), events, ttl=self.settings.ttl_after_done)
        return seqs[-1]

    async def last_seq(self, job_id: str) -> int | None:
        value = await self.redis.get(self.keys.job(job_id).seq)
        return None if value is None else int(value)

    async def aclose(self) -> None:
        if self._owns_redis:
            await self.redis.aclose()

    async def _write(self, keys: JobKeys, events: Sequence[Event], ttl: int) -> list[int]:
        data_key = self._data_key(keys)
        script_keys = [keys.seq, data_key, *(k for k in keys.all if k not in (keys.seq, data_key))]
        bodies = [event.body() for event in events]

        seqs: list[int] = []
        for start in range(0, len(bodies), MAX_EVENTS_PER_SCRIPT):
            chunk = bodies[start : start + MAX_EVENTS_PER_SCRIPT]
            chunk_ttl = ttl if start + len(chunk) == len(bodies) else 0
            args: list[str | int] = [self._kind, self.settings.max_len, chunk_ttl, *chunk]
            first = int(await self._publish_script(keys=script_keys, args=args))
            seqs.extend(range(first, first + len(chunk)))
        return seqs

    async def read(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        keys = self.keys.job(job_id)
        last = after
        idle_since = time.monotonic()
        cancels = _cancel_requests()
        # Every `_batches` is an async generator; close it with the read, not at GC time.
        reads = cast(AsyncGenerator[Batch, None], self._batches(keys, after))
        async with aclosing(reads) as batches:
            async for batch in batches:
                if _cancel_requests() > cancels:
                    raise asyncio.CancelledError  # see _cancel_requests
                if not batch:
                    if time.monotonic() - idle_since >= self.settings.idle_timeout:
                        yield self._idle_error(job_id, last)
                        return
                    continue
                idle_since = time.monotonic()
                for position, raw in batch:
                    for event in self._decode(job_id, position, raw, last):
                        last = max(last, event.seq)
                        yield event
                        if event.type == "done":
                            return

    def _decode(self, job_id: str, position: str, raw: bytes, last: int) -> list[Event]:
        """What one stored entry means to a consumer that has delivered up to seq `last`."""
        try:
            event = Event.from_json(raw)
        except InvalidEvent as err:
            logger.error("job %s: bad entry at %s after seq %d: %s", job_id, position, last, err)
            detail = {"position": position, "after_seq": last, "detail": str(err)}
            return [Event("error", {"reason": "bad_event", **detail})]
        if event.seq <= last:
            return []
        if event.seq > last + 1:
            logger.warning("job %s: seq %d..%d missing", job_id, last + 1, event.seq - 1)
            return [gap(last + 1, event.seq - 1, event.trace_id), event]
        return [event]

    def _idle_error(self, job_id: str, last: int) -> Event:
        idle = self.settings.idle_timeout
        logger.warning("job %s idle for %.0f s after seq %d, ending stream", job_id, idle, last)
        return Event("error", {"reason": "timeout", "after_seq": last, "idle_seconds": idle})

    @abstractmethod
    def _data_key(self, keys: JobKeys) -> str:
        """The key the publish script writes events to."""

    @abstractmethod
    def _batches(self, keys: JobKeys, after: int) -> AsyncIterator[Batch]:
        """Yield raw entries read from Redis, an empty batch after each idle read."""


def _cancel_requests() -> int:
    """How many cancellations of the current task are pending.

    On Python 3.11, redis-py sends each command inside `asyncio.wait_for` (when a socket
    timeout is set), and that `wait_for` drops a cancellation that arrives as the send
    completes: the command goes on and the task never sees its cancel. A consumer whose
    HTTP client left would then keep reading (and, in list-poll or list-blocking mode,
    keep taking events) forever, so `read` stops once this count rises during the read.
    A read begun while a cancellation is already being handled is not stopped by it.
    """
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0
