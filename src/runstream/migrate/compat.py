"""Which structures a process writes and reads, and the check that they meet.

A worker announces what it writes in the hash `<prefix>:workers` (one field per worker,
refreshed with its lease renewals, dropped when it stops) and stamps it on each job it runs
(`writes` in the job's meta hash). The API compares: `/healthz` lists live workers whose
writes it cannot read, and a stream of a job written where the API does not read starts
with an `error` event {reason: "backend_mismatch"} and ends, instead of waiting forever.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from redis.asyncio import Redis

from runstream.core.keys import KeySpace
from runstream.core.settings import Settings

logger = logging.getLogger(__name__)

BACKEND_MISMATCH = "backend_mismatch"


def structures(settings: Settings) -> str:
    """What a process with `settings` writes, and reads: `list`, `stream` or `list+stream`."""
    if settings.dual_write:
        return "list+stream"
    return "stream" if settings.backend == "streams" else "list"


def _meet(writes: str, reads: str) -> bool:
    return bool(set(writes.split("+")) & set(reads.split("+")))


class WorkerRegistry:
    """The `<prefix>:workers` hash: worker name -> {writes, backend, until}."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.key = f"{settings.key_prefix}:workers"

    async def announce(self, worker: str) -> None:
        """Record (or refresh) that `worker` is alive and what it writes."""
        entry = {
            "writes": structures(self.settings),
            "backend": self.settings.backend_name,
            "until": time.time() + self.settings.lease_seconds,
        }
        await self.redis.hset(self.key, worker, json.dumps(entry))

    async def withdraw(self, worker: str) -> None:
        await self.redis.hdel(self.key, worker)

    async def live(self) -> dict[str, dict[str, Any]]:
        """Workers that refreshed their entry within their lease; stale entries are removed."""
        now = time.time()
        live: dict[str, dict[str, Any]] = {}
        stale: list[str] = []
        for raw_name, raw in (await self.redis.hgetall(self.key)).items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            try:
                entry = json.loads(raw)
                fresh = float(entry["until"]) > now
            except (ValueError, KeyError, TypeError):
                fresh = False
            if fresh:
                live[name] = entry
            else:
                stale.append(name)
        if stale:
            await self.redis.hdel(self.key, *stale)
        return live


async def health_report(redis: Redis, settings: Settings) -> dict[str, Any]:
    """For `/healthz`: what the API reads, live workers by what they write, and mismatches."""
    reads = structures(settings)
    workers = await WorkerRegistry(redis, settings).live()
    writers: dict[str, int] = {}
    for entry in workers.values():
        writers[entry["writes"]] = writers.get(entry["writes"], 0) + 1
    report: dict[str, Any] = {"reads": reads, "workers": writers}
    unread = sorted(name for name, entry in workers.items() if not _meet(entry["writes"], reads))
    if unread:
        report[BACKEND_MISMATCH] = {
            "workers": unread,
            "detail": (
                f"{len(unread)} live workers write where this API does not read ({reads}); "
                "give API and workers the same RUNSTREAM_BACKEND and RUNSTREAM_DUAL_WRITE, "
                "or follow docs/migration.md"
            ),
        }
        logger.warning("healthz: %s", report[BACKEND_MISMATCH]["detail"])
    return report


async def job_mismatch(redis: Redis, settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The payload of a `backend_mismatch` error if the job is written where we do not read.

    The job's own stamp decides; a job no worker has started yet is a mismatch only if
    workers are alive and none of them writes where we read. A job whose events are where
    we read (copied there by `runstream migrate`) is never a mismatch.
    """
    reads = structures(settings)
    keys = KeySpace(settings.key_prefix).job(job_id)
    ours = [keys.list, keys.log] if reads == "list" else [keys.stream]
    if reads != "list+stream" and await redis.exists(*ours):
        return None
    raw = await redis.hget(keys.meta, "writes")
    if raw is not None:
        writers = [raw.decode() if isinstance(raw, bytes) else str(raw)]
    else:
        live = await WorkerRegistry(redis, settings).live()
        writers = sorted({entry["writes"] for entry in live.values()})
        if not writers or any(_meet(writes, reads) for writes in writers):
            return None
    if any(_meet(writes, reads) for writes in writers):
        return None
    writer = "|".join(writers)
    logger.warning("job %s: written to %s, but this API reads %s", job_id, writer, reads)
    return {
        "reason": BACKEND_MISMATCH,
        "writer": writer,
        "reader": reads,
        "message": (
            f"this job's events are written to {writer} but this API reads {reads}; "
            "set the same RUNSTREAM_BACKEND (and RUNSTREAM_DUAL_WRITE) on API and workers"
        ),
    }
