"""Redis key naming: the only place that spells a key.

Every key of a job carries the job id as a hash tag (`{job_id}`), so all of a job's keys
live in one Redis Cluster hash slot and a Lua script may touch them together.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runstream.core.errors import InvalidJobId

JOB_ID_MAX_LENGTH = 128
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]+")


def validate_job_id(job_id: str) -> str:
    """Return `job_id` if it is 1-128 characters of `A-Z a-z 0-9 _ . -`, else raise."""
    if not isinstance(job_id, str) or not job_id:
        raise InvalidJobId("job id must be a non-empty string")
    if len(job_id) > JOB_ID_MAX_LENGTH:
        raise InvalidJobId(
            f"job id is {len(job_id)} characters long; at most {JOB_ID_MAX_LENGTH} are allowed"
        )
    if not _JOB_ID.fullmatch(job_id):
        raise InvalidJobId(f"job id {job_id[:40]!r} has characters outside A-Z a-z 0-9 _ . -")
    return job_id


@dataclass(frozen=True, slots=True)
class JobKeys:
    """The Redis keys of one job."""

    job_id: str
    seq: str
    list: str
    log: str
    stream: str
    meta: str
    reader: str
    lease: str
    batch: str = ""
    """The last batch a producer wrote, so a retried publish is not written twice."""

    @property
    def all(self) -> tuple[str, ...]:
        return (self.seq, self.list, self.log, self.stream, self.meta, self.reader, self.lease)


@dataclass(frozen=True, slots=True)
class KeySpace:
    """Key names under one prefix (setting `RUNSTREAM_KEY_PREFIX`)."""

    prefix: str = "rs"

    def job(self, job_id: str) -> JobKeys:
        tag = f"{self.prefix}:{{{validate_job_id(job_id)}}}"
        return JobKeys(
            job_id=job_id,
            seq=f"{tag}:seq",
            list=f"{tag}:list",
            log=f"{tag}:log",
            stream=f"{tag}:stream",
            meta=f"{tag}:meta",
            reader=f"{tag}:reader",
            lease=f"{tag}:lease",
            batch=f"{tag}:batch",
        )

    @property
    def job_queue(self) -> str:
        return f"{self.prefix}:jobs"
