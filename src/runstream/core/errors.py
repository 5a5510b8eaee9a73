"""The exceptions runstream raises. Catch `RunstreamError` to catch them all."""

from __future__ import annotations


class RunstreamError(Exception):
    """Root of every runstream exception."""


class ConfigError(RunstreamError):
    """A setting is missing, malformed or inconsistent with another setting."""


class InvalidJobId(RunstreamError, ValueError):
    """A job id that cannot be used in a Redis key."""


class InvalidEvent(RunstreamError, ValueError):
    """An event that cannot be published or decoded; the message names the field."""


class JobNotFound(RunstreamError):
    """No data exists in Redis for the job (never created, or expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found (never created, or its keys expired)")
        self.job_id = job_id


class ReaderConflict(RunstreamError):
    """The backend mode serves one reader per job and another reader holds it."""


class TransportUnavailable(RunstreamError):
    """Redis cannot be reached or answered with an error we cannot recover from."""


class JobDataLost(TransportUnavailable):
    """Redis no longer has a job's events that were written (restarted without them)."""

    def __init__(self, job_id: str, after_seq: int) -> None:
        super().__init__(
            f"job {job_id!r}: Redis no longer has its events up to seq {after_seq} "
            "(restarted without its data, or the job expired); the job cannot continue"
        )
        self.job_id = job_id
        self.after_seq = after_seq


class JobFinished(RunstreamError):
    """`finish` on a job that already has its `done` (another producer or a reader ended it)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already has its done event; nothing was written")
        self.job_id = job_id
