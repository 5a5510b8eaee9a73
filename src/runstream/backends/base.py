"""What every Redis backend shares: seq assignment on publish, and the consumer's rules.

Seq is assigned inside Redis by one Lua script: INCRBY on the job's `seq` key, then the
write (RPUSH or XADD with the explicit ID `0-<seq>`), in one atomic step. Two producers of
one job (a retried worker, say) therefore never write the same seq, and the stored JSON
already carries its seq, so every backend stores byte-identical events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream.backends.guards import APPEND_LUA, OrphanGuard, ReaderClaim
from runstream.core.errors import InvalidEvent, JobDataLost, JobFinished
from runstream.core.events import Event, gap
from runstream.core.keys import JobKeys, KeySpace
from runstream.core.redis_client import connect_redis
from runstream.core.settings import Settings

logger = logging.getLogger(__name__)

# Lua's unpack() and a script's reply both have limits; larger batches go in chunks.
MAX_EVENTS_PER_SCRIPT = 1000
# How long the `batch` key remembers a producer's last batch: far longer than any retry.
BATCH_MARK_SECONDS = 600
# Backoff of a producer or consumer while Redis does not answer.
RETRY_FIRST, RETRY_MAX = 0.05, 2.0
# A reader checks at most this often whether a silent job's producer is gone.
ORPHAN_CHECK_SECONDS = 1.0
# The reader key of a single-reader mode lives at least this long without renewal.
MIN_READER_HOLD_MS = 5000
JOB_DATA_LOST = "job_data_lost"
ALREADY_FINISHED = -2

# KEYS: seq, list, stream, batch, then the job's other keys. ARGV: kind, cap, ttl, batch id,
# the seq the producer expects its batch to start at (0 = unknown), then the bodies.
# Returns the first seq; -1 when the job's events are gone (its seq went backwards); -2 when
# finishing a job that is already finished.
_PUBLISH = (
    APPEND_LUA
    + """
local kind, cap, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local batch, expected = ARGV[4], tonumber(ARGV[5])
local mark = redis.call('GET', KEYS[4])
if mark then
  local id, first = string.match(mark, '^(%S+) (%d+)$')
  -- A retry of a batch whose first attempt ran (its reply was lost): do not write it twice.
  if id == batch then return tonumber(first) end
end
if expected > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') < expected - 1 then
  return -1
end
-- A job has one `done`: finishing a job that already has one (its reader ended it while
-- this producer was stalled past its lease, say) writes nothing.
if ttl > 0 and redis.call('PTTL', KEYS[1]) > 0 then return -2 end
local bodies = {}
for i = 6, #ARGV do bodies[#bodies + 1] = ARGV[i] end
local first = append(kind, KEYS[2], KEYS[3], cap, bodies)
redis.call('SET', KEYS[4], batch .. ' ' .. first, 'EX', BATCH_MARK_SECONDS)
if ttl > 0 then
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
else
  -- A late publish to a finished job (a retried worker) must not leave a data key that
  -- never expires, as RPUSH to a list its consumer emptied would.
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    if kind ~= 'stream' then redis.call('PEXPIRE', KEYS[2], left) end
    if kind ~= 'list' then redis.call('PEXPIRE', KEYS[3], left) end
  end
end
return first
"""
).replace("BATCH_MARK_SECONDS", str(BATCH_MARK_SECONDS))

Batch = list[tuple[str, bytes]]
"""Raw entries of one read: (position for error messages, stored JSON)."""


@dataclass
class _Cursor:
    """Where one read is: the last seq delivered, and its clocks."""

    last: int
    cancels: int
    trace_id: str = ""
    idle_since: float = field(default_factory=time.monotonic)
    checked_at: float = field(default_factory=time.monotonic)
    retry: float = RETRY_FIRST


class RedisTransport(ABC):
    """The transport contract over one Redis data structure; see `Transport`.

    Producer retries: a publish that cannot reach Redis is retried with backoff for up to
    `lease_seconds`. Each batch carries an id that the script records in the job's `batch`
    key, so a retry whose first attempt ran returns that attempt's seqs instead of writing
    the events twice; and a producer passes the seq it expects next, so after a Redis
    restart that lost the job the publish raises `JobDataLost` instead of starting the
    job's seq again from 1. A job has exactly one `done`: `finish` on a finished job writes
    nothing and raises `JobFinished`.

    Consumer reconnects: a read that loses Redis retries with backoff (for up to
    `idle_timeout`) and resumes after the last seq it delivered; if Redis no longer has
    the job's events up to that seq, the read ends with `error` {reason: "job_data_lost"}.
    """

    name: str
    _kind: str  # the publish script's write: "list", "stream" or "both"
    single_reader = False  # True for the modes that pop: one reader per job

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.redis = redis if redis is not None else connect_redis(settings)
        self._owns_redis = redis is None
        self._publish_script = self.redis.register_script(_PUBLISH)
        self._orphans = OrphanGuard(
            self.redis, self._kind, settings.max_len, settings.ttl_after_done
        )
        self._next_seq: dict[str, int] = {}

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
        main = (keys.seq, keys.list, keys.stream, keys.batch)
        script_keys = [*main, *(k for k in keys.all if k not in main)]
        bodies = [event.body() for event in events]

        seqs: list[int] = []
        for start in range(0, len(bodies), MAX_EVENTS_PER_SCRIPT):
            chunk = bodies[start : start + MAX_EVENTS_PER_SCRIPT]
            chunk_ttl = ttl if start + len(chunk) == len(bodies) else 0
            expected = self._next_seq.get(keys.job_id, 0)
            args = [self._kind, self.settings.max_len, chunk_ttl, uuid.uuid4().hex, expected]
            first = await self._run_publish(keys, script_keys, [*args, *chunk])
            seqs.extend(range(first, first + len(chunk)))
            self._next_seq[keys.job_id] = first + len(chunk)
        if ttl:
            self._next_seq.pop(keys.job_id, None)
        return seqs

    async def _run_publish(self, keys: JobKeys, script_keys: list[str], args: list[Any]) -> int:
        retry = RETRY_FIRST
        deadline = time.monotonic() + self.settings.lease_seconds
        while True:
            try:
                first = int(await self._publish_script(keys=script_keys, args=args))
            except (RedisConnectionError, RedisTimeoutError) as err:
                if time.monotonic() + retry > deadline:
                    raise
                logger.warning(
                    "job %s: publish after seq %d failed (%s); retry in %.2f s",
                    keys.job_id,
                    max(0, args[4] - 1),
                    err,
                    retry,
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            if first == ALREADY_FINISHED:
                self._next_seq.pop(keys.job_id, None)
                raise JobFinished(keys.job_id)
            if first < 0:
                self._next_seq.pop(keys.job_id, None)
                raise JobDataLost(keys.job_id, args[4] - 1)
            return first

    def read(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        return self._read(job_id, after, None)

    async def open_read(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        keys = self.keys.job(job_id)
        claim = await self._claim_reader(keys)
        return self._read(job_id, after, claim)

    async def _claim_reader(self, keys: JobKeys) -> ReaderClaim | None:
        if not self.single_reader:
            return None
        hold_ms = max(MIN_READER_HOLD_MS, 3 * self.settings.block_ms)
        return await ReaderClaim(self.redis, keys, self.name, hold_ms).acquire()

    async def _read(
        self, job_id: str, after: int, claim: ReaderClaim | None
    ) -> AsyncIterator[Event]:
        keys = self.keys.job(job_id)
        cursor = _Cursor(after, _cancel_requests())
        claim = claim or await self._claim_reader(keys)
        try:
            while True:
                try:
                    reads = cast(AsyncGenerator[Event, None], self._events(keys, cursor, claim))
                    async with aclosing(reads) as events:
                        async for event in events:
                            yield event
                    return
                except (RedisConnectionError, RedisTimeoutError) as err:
                    lost = await self._after_connection_error(keys, cursor, err)
                    if lost is not None:
                        yield lost
                        return
        finally:
            if claim is not None:
                with contextlib.suppress(RedisError):
                    await claim.release()

    async def _events(
        self, keys: JobKeys, cursor: _Cursor, claim: ReaderClaim | None
    ) -> AsyncIterator[Event]:
        # Every `_batches` is an async generator; close it with the read, not at GC time.
        reads = cast(AsyncGenerator[Batch, None], self._batches(keys, cursor.last))
        async with aclosing(reads) as batches:
            async for batch in batches:
                if _cancel_requests() > cursor.cancels:
                    raise asyncio.CancelledError  # see _cancel_requests
                cursor.retry = RETRY_FIRST
                if claim is not None:
                    await claim.keep()
                if not batch:
                    if time.monotonic() - cursor.idle_since >= self.settings.idle_timeout:
                        yield self._idle_error(keys.job_id, cursor.last)
                        return
                    await self._check_producer(keys, cursor)
                    continue
                cursor.idle_since = time.monotonic()
                for position, raw in batch:
                    for event in self._decode(keys.job_id, position, raw, cursor.last):
                        cursor.last = max(cursor.last, event.seq)
                        cursor.trace_id = event.trace_id or cursor.trace_id
                        yield event
                        if event.type == "done":
                            return

    async def _check_producer(self, keys: JobKeys, cursor: _Cursor) -> None:
        if time.monotonic() - cursor.checked_at < ORPHAN_CHECK_SECONDS:
            return
        cursor.checked_at = time.monotonic()
        await self._orphans.end_if_orphaned(keys, cursor.trace_id)

    async def _after_connection_error(
        self, keys: JobKeys, cursor: _Cursor, err: Exception
    ) -> Event | None:
        """Wait to reconnect; an `error` event if the job's events are gone, else None."""
        if time.monotonic() - cursor.idle_since >= self.settings.idle_timeout:
            raise err
        logger.warning(
            "job %s: read after seq %d lost Redis (%s); retry in %.2f s",
            keys.job_id,
            cursor.last,
            err,
            cursor.retry,
        )
        await asyncio.sleep(cursor.retry)
        cursor.retry = min(cursor.retry * 2, RETRY_MAX)
        try:
            current = await self.last_seq(keys.job_id)
        except (RedisConnectionError, RedisTimeoutError):
            return None
        if (current or 0) >= cursor.last:
            return None
        logger.error(
            "job %s: Redis lost the job's events (seq now %s, delivered up to %d)",
            keys.job_id,
            current,
            cursor.last,
        )
        message = "Redis no longer has this job's events (restarted without them, or expired)"
        payload = {"reason": JOB_DATA_LOST, "message": message, "after_seq": cursor.last}
        return Event("error", payload, cursor.trace_id)

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
