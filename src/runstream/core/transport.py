"""The transport contract, and the factory that picks a backend from settings."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from runstream.core.events import Event
from runstream.core.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis


@runtime_checkable
class Transport(Protocol):
    """Moves a job's events from its producer to its consumers.

    Producer side: `publish`, `publish_many`, `finish`. Redis assigns each event its
    `seq` (1, 2, 3, ... per job) atomically, so concurrent producers of one job never
    share a seq. Consumer side: `read`, an async iterator over the events after a seq,
    in seq order, ending after `done`.
    """

    name: str

    async def publish(self, job_id: str, event: Event) -> int:
        """Append one event; return the seq Redis gave it."""
        ...

    async def publish_many(self, job_id: str, events: Sequence[Event]) -> list[int]:
        """Append events in one round trip; return their seqs (contiguous, ascending)."""
        ...

    async def finish(
        self,
        job_id: str,
        payload: Mapping[str, Any] | None = None,
        *,
        error: Mapping[str, Any] | None = None,
        trace_id: str = "",
    ) -> int:
        """Append `error` (if given) then `done`, and start the job's keys' TTL.

        Returns the seq of `done`.
        """
        ...

    def read(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Yield the job's events with seq > `after`, in order, ending after `done`.

        A hole in the stored sequence is yielded as one `gap` event; a stream idle for
        `idle_timeout` ends with an `error` event whose reason is `timeout`; a stored
        entry that cannot be decoded is yielded as an `error` event (reason `bad_event`,
        naming its position) and the read goes on. Cancelling the task that iterates
        stops the read at its next step; in the modes that keep events (list-reliable,
        streams) a new read `after` the last seq delivered loses nothing.
        """
        ...

    async def open_read(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """`read`, but a reader conflict raises `ReaderConflict` here, before any event.

        The modes that pop events (list-poll, list-blocking) serve one reader per job.
        """
        ...

    async def last_seq(self, job_id: str) -> int | None:
        """The highest seq given out for the job, or None if Redis has no data for it."""
        ...

    async def aclose(self) -> None:
        """Release the Redis connections this transport opened."""
        ...


_BACKENDS = {
    "list": "runstream.backends.redis_list:ListTransport",
    "streams": "runstream.backends.redis_streams:StreamsTransport",
    "dual-write": "runstream.backends.migrating:MigratingTransport",
}


def open_transport(settings: Settings, redis: Redis | None = None) -> Transport:
    """Build the backend named by `settings.backend` (both, with `settings.dual_write`).

    With `redis` given (a fakeredis client in tests, say) the transport uses it and does
    not close it; otherwise it opens its own client from `settings.redis_url`.
    """
    name = "dual-write" if settings.dual_write else settings.backend
    module_name, _, class_name = _BACKENDS[name].partition(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    transport: Transport = backend_class(settings, redis)
    return transport
