"""`runstream migrate`: copy each job's missing events from one structure to the other.

The scan finds jobs by their seq key (SCAN MATCH `<prefix>:{*}:seq`,
https://redis.io/docs/latest/commands/scan/), which every job with events has, and runs one
`COPY_JOB` script per job. The script copies what the target lacks past its last seq, so a
second run copies nothing, and a run killed half-way leaves each job either copied in full
or untouched: running it again finishes the work with no duplicate. A dry run runs the same
scripts in counting mode, so it reports exactly what a real run would copy.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from runstream.core.errors import ConfigError, InvalidJobId
from runstream.core.keys import KeySpace, validate_job_id
from runstream.core.settings import Settings
from runstream.migrate.lua import COPY_JOB

logger = logging.getLogger(__name__)

Target = Literal["streams", "list"]
DEFAULT_BATCH = 100


@dataclass
class MigrationReport:
    """What one run did (or, for a dry run, would do)."""

    target: Target
    dry_run: bool
    pruned: bool
    jobs_scanned: int = 0
    jobs_in_list: int = 0
    jobs_in_stream: int = 0
    jobs_copied: int = 0
    events_copied: int = 0
    keys_deleted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class JobResult:
    job_id: str
    copied: int
    list_last: int
    stream_last: int
    deleted: int


class Migration:
    """Copies jobs' events to `target` ("streams" or "list"); see the module docstring.

    `prune` also deletes the other structure of each job once the target holds all of it
    (phase 4 of the runbook); it is refused while producers dual-write or read that structure.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        target: Target = "streams",
        dry_run: bool = False,
        batch: int = DEFAULT_BATCH,
        prune: bool = False,
    ) -> None:
        if batch < 1:
            raise ConfigError(f"--batch must be at least 1, got {batch}")
        if prune:
            _check_prune(settings, target)
        self.redis = redis
        self.settings = settings
        self.target: Target = target
        self.dry_run = dry_run
        self.batch = batch
        self.prune = prune
        self.keys = KeySpace(settings.key_prefix)
        self._copy = redis.register_script(COPY_JOB)
        self._seq_key = re.compile(rf"^{re.escape(settings.key_prefix)}:\{{(.+)\}}:seq$")

    async def run(self, on_job: Callable[[JobResult], None] | None = None) -> MigrationReport:
        """Scan every job once and copy (or count) its missing events."""
        report = MigrationReport(self.target, self.dry_run, self.prune)
        seen: set[str] = set()
        pending: list[str] = []
        pattern = f"{self.settings.key_prefix}:{{*}}:seq"
        async for key in self.redis.scan_iter(match=pattern, count=self.batch):
            job_id = self._job_id(key)
            if job_id is None or job_id in seen:
                continue
            seen.add(job_id)
            pending.append(job_id)
            if len(pending) >= self.batch:
                await self._copy_jobs(pending, report, on_job)
                pending = []
        await self._copy_jobs(pending, report, on_job)
        return report

    def _job_id(self, key: bytes | str) -> str | None:
        text = key.decode() if isinstance(key, bytes) else key
        match = self._seq_key.match(text)
        if match is None:
            return None
        try:
            return validate_job_id(match[1])
        except InvalidJobId:
            logger.warning("migrate: skipping key %r, not a job's seq key", text)
            return None

    async def _copy_jobs(
        self,
        job_ids: list[str],
        report: MigrationReport,
        on_job: Callable[[JobResult], None] | None,
    ) -> None:
        if not job_ids:
            return
        args = [
            "stream" if self.target == "streams" else "list",
            self.settings.max_len,
            int(self.dry_run),
            int(self.prune),
        ]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                keys = self.keys.job(job_id)
                script_keys = [keys.seq, keys.list, keys.log, keys.stream]
                await self._copy(keys=script_keys, args=args, client=pipe)
            replies = await pipe.execute()

        for job_id, reply in zip(job_ids, replies, strict=True):
            result = JobResult(job_id, *(int(value) for value in reply))
            _count(report, result)
            if result.copied:
                logger.info(
                    "job %s: %s %d events to %s after seq %d",
                    job_id,
                    "would copy" if self.dry_run else "copied",
                    result.copied,
                    self.target,
                    result.stream_last if self.target == "streams" else result.list_last,
                )
            if on_job is not None:
                on_job(result)


def _count(report: MigrationReport, result: JobResult) -> None:
    report.jobs_scanned += 1
    report.jobs_in_list += result.list_last > 0
    report.jobs_in_stream += result.stream_last > 0
    report.jobs_copied += result.copied > 0
    report.events_copied += result.copied
    report.keys_deleted += result.deleted


def _check_prune(settings: Settings, target: Target) -> None:
    source = "list" if target == "streams" else "streams"
    if settings.dual_write:
        raise ConfigError(
            f"--prune deletes every job's {source} keys, which RUNSTREAM_DUAL_WRITE=true "
            "producers keep writing; prune only once dual-write is off everywhere "
            "(phase 4 of docs/migration.md)"
        )
    if settings.backend == source:
        raise ConfigError(
            f"--prune deletes every job's {source} keys, but RUNSTREAM_BACKEND={source} "
            f"reads them; prune with RUNSTREAM_BACKEND={target}"
        )
