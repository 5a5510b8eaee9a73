"""Guards around a job's readers: one reader per job in the modes that pop, and the end of
a job whose producer is gone.

Reader claim. `list-poll` and `list-blocking` remove events as they read them, so two
readers of one job would split its events between them. A reader of those modes first
takes the job's `reader` key (`SET NX PX`, https://redis.io/docs/latest/commands/set/),
keeps it while it reads, and deletes it when it stops; a second reader meanwhile gets
`ReaderConflict`. A reader that dies without deleting it frees the job when the key expires.

Orphaned jobs. A worker running a job keeps the job's `lease` key alive (see
`runstream.worker.queue`). A reader waiting on a job whose meta says `running`, whose
`done` is not written and whose `lease` key is gone knows its producer died; it ends the
job itself with `error` {reason: "producer_lost"} then `done`, continuing the seq. The
check and the two writes are one Lua script, so of several readers (and a worker taking
the job over, which sets the `lease` key before it looks at the job) exactly one ends it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from runstream.core.errors import ReaderConflict
from runstream.core.events import Event
from runstream.core.keys import JobKeys

logger = logging.getLogger(__name__)

PRODUCER_LOST = "producer_lost"
ORPHAN_MESSAGE = (
    "the worker running this job stopped renewing its lease before the job finished; "
    "the job is not run again because part of its output may have been published"
)

# The body of an event, without `{"seq":N,` (see `Event.body`), has one placeholder number
# where the script writes the job's last seq.
_PLACEHOLDER = 918273645546372819

# Appends `bodies` after INCRBY on KEYS[1]: to the list `list_key`, the stream
# `stream_key`, or both (kind `list`, `stream`, `both`). Returns the first seq.
APPEND_LUA = """
local function append(kind, list_key, stream_key, cap, bodies)
  local n = #bodies
  local first = redis.call('INCRBY', KEYS[1], n) - n + 1
  local entries = {}
  for i = 1, n do
    local seq = string.format('%d', first + i - 1)
    entries[i] = '{"seq":' .. seq .. ',' .. bodies[i]
    if kind ~= 'list' then
      redis.call('XADD', stream_key, 'MAXLEN', '~', cap, '0-' .. seq, 'e', entries[i])
    end
  end
  if kind ~= 'stream' then
    redis.call('RPUSH', list_key, unpack(entries))
    redis.call('LTRIM', list_key, -cap, -1)
  end
  return first
end
"""

# KEYS: seq, list, stream, batch, lease, meta, log. ARGV: kind, cap, ttl, finished_at,
# error body (prefix, suffix), done body (prefix, suffix), error text for the meta hash.
# Returns the seq of `done`, or 0 if the job is not orphaned.
_END_ORPHAN = (
    APPEND_LUA
    + """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if redis.call('TYPE', KEYS[6]).ok ~= 'hash' then return 0 end
if redis.call('HGET', KEYS[6], 'status') ~= 'running' then return 0 end
if redis.call('PTTL', KEYS[1]) > 0 then return 0 end
local last = redis.call('GET', KEYS[1]) or '0'
local bodies = {ARGV[5] .. last .. ARGV[6], ARGV[7] .. last .. ARGV[8]}
local first = append(ARGV[1], KEYS[2], KEYS[3], tonumber(ARGV[2]), bodies)
redis.call('HSET', KEYS[6], 'status', 'failed', 'finished_at', ARGV[4], 'error', ARGV[9])
for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], tonumber(ARGV[3])) end
return first + 1
"""
)

_KEEP_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE_CLAIM = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ReaderClaim:
    """A reader's hold on a job's `reader` key; renewed with `keep`, freed with `release`."""

    def __init__(self, redis: Redis, keys: JobKeys, backend: str, hold_ms: int) -> None:
        self.redis = redis
        self.keys = keys
        self.backend = backend
        self.hold_ms = hold_ms
        self.token = uuid.uuid4().hex
        self._kept_at = 0.0
        self._keep = redis.register_script(_KEEP_CLAIM)
        self._release = redis.register_script(_RELEASE_CLAIM)

    async def acquire(self) -> ReaderClaim:
        """Take the job's reader key or raise `ReaderConflict`."""
        try:
            taken = await self.redis.set(self.keys.reader, self.token, nx=True, px=self.hold_ms)
        except BaseException:
            # Cancelled (or cut off) after Redis may have run the SET: free it if it did.
            with contextlib.suppress(RedisError):
                await self.release()
            raise
        if not taken:
            raise ReaderConflict(self._conflict())
        self._kept_at = time.monotonic()
        return self

    async def keep(self) -> None:
        """Renew the hold once a third of it has passed (also re-takes it after a flush)."""
        if time.monotonic() - self._kept_at < self.hold_ms / 3000:
            return
        if not await self._keep(keys=[self.keys.reader], args=[self.token, self.hold_ms]):
            raise ReaderConflict(self._conflict())
        self._kept_at = time.monotonic()

    async def release(self) -> None:
        await self._release(keys=[self.keys.reader], args=[self.token])

    def _conflict(self) -> str:
        return (
            f"job {self.keys.job_id!r} already has a reader, and backend {self.backend} "
            "removes events as it reads them, so a second reader would split them; set "
            "RUNSTREAM_LIST_MODE=reliable or RUNSTREAM_BACKEND=streams to let several "
            "clients read one job"
        )


class OrphanGuard:
    """Ends a job whose producer died (see the module docstring)."""

    def __init__(self, redis: Redis, kind: str, max_len: int, ttl: int) -> None:
        self.redis = redis
        self.kind = kind
        self.max_len = max_len
        self.ttl = ttl
        self._script = redis.register_script(_END_ORPHAN)

    async def end_if_orphaned(self, keys: JobKeys, trace_id: str) -> int:
        """Publish `error` + `done` if the job's producer is gone; the seq of `done` or 0."""
        error = {"reason": PRODUCER_LOST, "message": ORPHAN_MESSAGE, "after_seq": _PLACEHOLDER}
        script_keys = [keys.seq, keys.list, keys.stream, keys.batch, keys.lease, keys.meta]
        args: list[Any] = [
            self.kind,
            self.max_len,
            self.ttl,
            repr(time.time()),
            *_template(Event("error", error, trace_id)),
            *_template(Event("done", {"events": _PLACEHOLDER}, trace_id)),
            f"{PRODUCER_LOST}: {ORPHAN_MESSAGE}",
        ]
        done_seq = int(await self._script(keys=[*script_keys, keys.log], args=args))
        if done_seq:
            logger.warning(
                "job %s: producer lost (lease expired); a reader ended it at seq %d",
                keys.job_id,
                done_seq,
            )
        return done_seq


def _template(event: Event) -> tuple[str, str]:
    prefix, _, suffix = event.body().partition(json.dumps(_PLACEHOLDER))
    return prefix, suffix
