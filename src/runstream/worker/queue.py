"""The job queue: a Redis Stream read by the `workers` consumer group.

Submitting a job is one Lua script: it XADDs `{job_id, input}` to `rs:jobs` and writes the
job's meta hash (`status=queued`), or does nothing if the id is taken. The meta hash of a
job not yet finished expires after `UNFINISHED_TTL_SECONDS` (a week, or the job timeout
plus a day if longer), so a job nobody runs cannot stay `queued` forever; a finished job's
keys get `ttl_after_done`. The consumer group is created by the workers (from id 0, so it
sees jobs queued before it existed), not on each submit. A worker takes jobs with XREADGROUP
(https://redis.io/docs/latest/commands/xreadgroup/); a taken job stays in the group's
pending entries list (PEL) until the worker XACKs it after the job's `done` event, and is
then deleted from the stream, so the queue holds only jobs not yet finished.

Leases. A pending entry's idle time is its lease: a worker running a job re-claims its own
entry (XCLAIM ... JUSTID, https://redis.io/docs/latest/commands/xclaim/) every
`lease_seconds / 3`, which resets the idle time without bumping the delivery count. A
worker that dies stops renewing; once the entry is idle for `lease_seconds`, any other
worker takes it over with XAUTOCLAIM (https://redis.io/docs/latest/commands/xautoclaim/).
The renewal is a Lua script that re-claims an entry only while the caller still owns it,
so a worker that stalled past its lease never steals its job back. The worker also keeps
the job's `lease` key (`SET ... PX`, two thirds of the lease) alive, so a consumer can tell
a live producer from a dead one without reading the PEL.

Crash semantics (what a reclaimed job becomes):

- The job already finished (its keys have a TTL, which only `Transport.finish` starts):
  the dead worker died between `done` and XACK. Nothing is published; the entry is acked.
- The job published events (`last_seq > 0`) but no `done`: it is NOT run again, because
  its consumers have already seen part of its output and a rerun would repeat or contradict
  it. The new owner publishes `error` {reason: "producer_lost", ...} then `done`, marks the
  job `failed`, and acks it. Consumers see the seq continue with no hole.
- The job published nothing: it is run normally, from the start, unless workers have
  already died on it `worker.MAX_DELIVERIES` times (a job that kills its worker, say); then it
  ends with `error` {reason: "producer_lost"} then `done` too, instead of killing more.

With no other worker alive, nobody takes the job over; its readers then end it themselves
once its `lease` key is gone (`runstream.backends.guards`): `error` {reason:
"producer_lost"} then `done`, in one Lua step that only runs while the job is `running`,
unfinished and without a lease. A worker taking a job over sets the `lease` key before it
looks at the job, so a reader and a worker never both end it; a worker that finds the job
already ended acks it.

Why a Stream and not a reliable list: the consumer group keeps per-entry owner, idle time
and delivery count in Redis itself, so takeover is one command and needs no sweeper.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from runstream.core.errors import RunstreamError
from runstream.core.keys import KeySpace, validate_job_id
from runstream.core.settings import Settings
from runstream.migrate.compat import structures

logger = logging.getLogger(__name__)

GROUP = "workers"
"""The consumer group every worker joins."""

JobState = Literal["queued", "running", "done", "failed"]
_STATES: dict[str, JobState] = {
    "queued": "queued",
    "running": "running",
    "done": "done",
    "failed": "failed",
}

# Queue job ARGV[1] with input ARGV[2] created at ARGV[3], its meta KEYS[1] expiring in
# ARGV[4] s, unless the id is taken (return 0). XADD comes first: a script is not rolled
# back, and the stream is the write that can fail (a key of the wrong type).
_SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'input', ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

UNFINISHED_TTL_SECONDS = 7 * 24 * 3600
"""How long the meta hash of a job that never finishes lives (queued, or its worker gone)."""

# Re-claim each entry in ARGV[3..] (resetting its idle time) only if consumer ARGV[2] of
# group ARGV[1] still owns it; return the entries it still owns.
_RENEW = """
local owned = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending == 1 and pending[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    owned[#owned + 1] = ARGV[i]
  end
end
return owned
"""


class InvalidJobInput(RunstreamError, ValueError):
    """A job input that is not a JSON object, or a job id already in use."""


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What `GET /jobs/{job_id}` reports.

    Times are Unix seconds. `events` counts the events stored so far (for a finished job,
    the seq of its `done`); `tokens` counts published `token` events, recorded while the
    job runs (about once a second) and when it ends.
    """

    job_id: str
    status: JobState
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    events: int = 0
    tokens: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job a worker took from the queue. `entry_id` is what it renews and acks.

    `deliveries` counts the workers that have taken the job, this one included.
    """

    job_id: str
    job_input: dict[str, Any]
    entry_id: str
    reclaimed: bool = False
    deliveries: int = 1


class JobQueue:
    """Submit jobs, take them, renew their leases, ack them; read and write job status."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.stream = self.keys.job_queue
        self._renew_script = redis.register_script(_RENEW)
        self._submit_script = redis.register_script(_SUBMIT)
        self._group_ready = False
        self._claim_cursor = "0-0"

    @property
    def lease_ms(self) -> int:
        return max(1, int(self.settings.lease_seconds * 1000))

    @property
    def lease_key_ms(self) -> int:
        """How long the job's `lease` key outlives its last renewal: two renewal intervals.

        Renewals come every third of the lease, so a live worker keeps the key even with one
        renewal late; a dead one's readers notice within 2/3 of the lease (20 s by default).
        """
        return max(1, self.lease_ms * 2 // 3)

    @property
    def unfinished_ttl(self) -> int:
        """Seconds an unfinished job's meta hash lives: a week, or a day past the timeout."""
        return max(UNFINISHED_TTL_SECONDS, int(self.settings.job_timeout) + 24 * 3600)

    async def submit(self, job_id: str, job_input: Mapping[str, Any]) -> None:
        """Record the job as `queued` and enqueue it. Raise `InvalidJobInput` on bad input."""
        meta = self.keys.job(validate_job_id(job_id)).meta
        encoded = _encode_input(job_input)

        args: list[str | int] = [job_id, encoded, repr(time.time()), self.unfinished_ttl]
        if not await self._submit_script(keys=[meta, self.stream], args=args):
            raise InvalidJobInput(f"job id {job_id!r} is already in use; submit a new id")
        logger.info("job %s queued", job_id)

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None if it has no meta hash (never submitted, or expired)."""
        keys = self.keys.job(validate_job_id(job_id))
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.meta)
            pipe.get(keys.seq)
            meta, seq = await pipe.execute()
        if not meta:
            return None
        return _status_from_meta(job_id, _decode_map(meta), int(seq or 0))

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group if they do not exist yet."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    async def take(self, consumer: str, count: int, block_ms: int) -> list[QueuedJob]:
        """Up to `count` jobs: first those whose lease expired, then new ones.

        Waits up to `block_ms` for a new job when none is waiting.
        """
        jobs = await self.reclaim(consumer, count)
        if jobs:
            return jobs
        reply = await self._with_group(
            self.redis.xreadgroup,
            GROUP,
            consumer,
            {self.stream: ">"},
            count=count,
            block=block_ms,
        )
        entries = reply[0][1] if reply else []
        return await self._parse_entries(entries, reclaimed=False)

    async def reclaim(self, consumer: str, count: int) -> list[QueuedJob]:
        """Take over up to `count` jobs whose worker has not renewed its lease in time."""
        reply = await self._with_group(
            self.redis.xautoclaim,
            self.stream,
            GROUP,
            consumer,
            min_idle_time=self.lease_ms,
            start_id=self._claim_cursor,
            count=count,
        )
        cursor, entries = reply[0], reply[1]
        self._claim_cursor = _text(cursor)
        jobs = await self._with_deliveries(await self._parse_entries(entries, reclaimed=True))
        for job in jobs:
            logger.warning(
                "job %s: lease expired, taken over by %s (delivery %d)",
                job.job_id,
                consumer,
                job.deliveries,
            )
        return jobs

    async def _with_deliveries(self, jobs: list[QueuedJob]) -> list[QueuedJob]:
        if not jobs:
            return jobs
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xpending_range(self.stream, GROUP, job.entry_id, job.entry_id, 1)
            replies = await pipe.execute()
        counts = [reply[0]["times_delivered"] if reply else 1 for reply in replies]
        return [replace(job, deliveries=count) for job, count in zip(jobs, counts, strict=True)]

    async def renew(self, consumer: str, jobs: Sequence[QueuedJob]) -> set[str]:
        """Renew the leases of `jobs`; return the entry ids this consumer still owns."""
        if not jobs:
            return set()
        args = [GROUP, consumer, *(job.entry_id for job in jobs)]
        owned = {_text(entry) for entry in await self._renew_script([self.stream], args)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                if job.entry_id in owned:
                    pipe.set(self.keys.job(job.job_id).lease, consumer, px=self.lease_key_ms)
            await pipe.execute()
        return owned

    async def ack(self, job: QueuedJob) -> None:
        """Mark the job's entry handled and drop it from the stream; end its lease."""
        await self._ack_entry(job.entry_id)
        await self.redis.delete(self.keys.job(job.job_id).lease)

    async def _ack_entry(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def retire(self, consumer: str) -> bool:
        """Remove a stopping worker's consumer from the group, if it holds no pending job.

        A consumer that still holds jobs is kept, or its jobs would leave the PEL and never
        be taken over (https://redis.io/docs/latest/commands/xgroup-delconsumer/).
        """
        held = await self.redis.xpending_range(
            self.stream, GROUP, "-", "+", 1, consumername=consumer
        )
        if held:
            return False
        await self.redis.xgroup_delconsumer(self.stream, GROUP, consumer)
        return True

    async def mark_running(self, job_id: str, consumer: str) -> None:
        meta = self.keys.job(job_id).meta
        fields: dict[FieldT, EncodableT] = {
            "status": "running",
            "started_at": repr(time.time()),
            "worker": consumer,
            "writes": structures(self.settings),
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(meta, mapping=fields)
            pipe.expire(meta, self.unfinished_ttl)
            await pipe.execute()

    async def mark_finished(
        self, job_id: str, *, tokens: int | None = None, error: str | None = None
    ) -> None:
        """Record the job's end, just before its `done` is published.

        `tokens=None` keeps the count recorded while the job ran (a job ended by another
        worker, say). `Transport.finish` then gives the meta hash the TTL of the job's
        other keys.
        """
        fields: dict[FieldT, EncodableT] = {
            "status": "failed" if error is not None else "done",
            "finished_at": repr(time.time()),
        }
        if tokens is not None:
            fields["tokens"] = tokens
        if error is not None:
            fields["error"] = error
        await self.redis.hset(self.keys.job(job_id).meta, mapping=fields)

    async def record_tokens(self, job_id: str, tokens: int) -> None:
        """Record how many `token` events a running job has published so far."""
        await self.redis.hset(self.keys.job(job_id).meta, "tokens", tokens)

    async def has_finished(self, job_id: str) -> bool:
        """True if the job's `done` was published: `finish` starts the TTL of its seq key."""
        keys = self.keys.job(job_id)
        ttl = await self.redis.pttl(keys.seq)
        return int(ttl) > 0

    async def _with_group(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        await self.ensure_group()
        try:
            return await command(*args, **kwargs)
        except ResponseError as err:
            # NOGROUP: the stream is gone; UNBLOCKED: it went while XREADGROUP waited on it.
            if not str(err).startswith(("NOGROUP", "UNBLOCKED")):
                raise
        # The stream was deleted under us (FLUSHDB, a manual DEL): recreate and retry once.
        logger.warning("job queue %s lost its consumer group; recreating it", self.stream)
        self._group_ready = False
        await self.ensure_group()
        return await command(*args, **kwargs)

    async def _parse_entries(self, entries: Any, *, reclaimed: bool) -> list[QueuedJob]:
        jobs = []
        for entry_id, fields in entries:
            if not fields:
                continue
            job = _parse_entry(_text(entry_id), _decode_map(fields), reclaimed)
            if job is None:
                # An entry we cannot run is acked and dropped, never retried forever.
                await self._ack_entry(_text(entry_id))
                continue
            jobs.append(job)
        return jobs


def _encode_input(job_input: Mapping[str, Any]) -> str:
    if not isinstance(job_input, Mapping):
        raise InvalidJobInput(f"job input must be a JSON object, got {type(job_input).__name__}")
    try:
        encoded = json.dumps(
            dict(job_input), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        encoded.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidJobInput("job input holds a lone surrogate, which is not valid UTF-8") from err
    except (TypeError, ValueError) as err:
        raise InvalidJobInput(f"job input is not serialisable as JSON ({err})") from err
    return encoded


def _parse_entry(entry_id: str, fields: dict[str, str], reclaimed: bool) -> QueuedJob | None:
    try:
        job_id = validate_job_id(fields.get("job_id", ""))
        job_input = json.loads(fields.get("input", ""))
        if not isinstance(job_input, dict):
            raise ValueError("input is not a JSON object")
    except (RunstreamError, ValueError) as err:
        logger.error("job queue entry %s is malformed (%s); dropping it", entry_id, err)
        return None
    return QueuedJob(job_id, job_input, entry_id, reclaimed)


def _status_from_meta(job_id: str, meta: dict[str, str], events: int) -> JobStatus:
    return JobStatus(
        job_id=job_id,
        status=_STATES.get(meta.get("status", ""), "queued"),
        created_at=_float(meta.get("created_at")),
        started_at=_float(meta.get("started_at")),
        finished_at=_float(meta.get("finished_at")),
        events=events,
        tokens=int(meta.get("tokens", 0)),
        error=meta.get("error"),
    )


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_map(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(key): _text(value) for key, value in raw.items()}
