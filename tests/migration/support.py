"""Helpers for the migration tests: transports per phase, exact reads of a job's structures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from runstream.core.events import Event
from runstream.core.keys import JobKeys, KeySpace
from runstream.core.settings import Settings, load_settings
from runstream.core.transport import Transport, open_transport
from runstream.migrate.copy import Migration, MigrationReport, Target

TEST_SETTINGS: dict[str, Any] = {
    "block_ms": 100,
    "socket_timeout": 5.0,
    "idle_timeout": 5.0,
    "ttl_after_done": 600,
}

# Settings of each phase of docs/migration.md (the way back uses the same ones in reverse).
PHASES: dict[str, dict[str, Any]] = {
    "list": {"backend": "list", "list_mode": "reliable"},
    "dual-list": {"backend": "list", "list_mode": "reliable", "dual_write": True},
    "dual-streams": {"backend": "streams", "list_mode": "reliable", "dual_write": True},
    "streams": {"backend": "streams"},
}


def keys(job_id: str) -> JobKeys:
    return KeySpace("rs").job(job_id)


@dataclass
class Transports:
    """Builds transports of each phase on one Redis client; `close()` releases them."""

    redis: Redis
    made: list[Transport] = field(default_factory=list)

    def settings(self, phase: str, **overrides: Any) -> Settings:
        return load_settings(**{**TEST_SETTINGS, **PHASES[phase], **overrides})

    def __call__(self, phase: str, **overrides: Any) -> Transport:
        transport = open_transport(self.settings(phase, **overrides), self.redis)
        self.made.append(transport)
        return transport

    async def migrate(self, target: Target = "streams", **options: Any) -> MigrationReport:
        phase = "streams" if target == "streams" else "list"
        migration = Migration(self.redis, self.settings(phase), target=target, **options)
        return await migration.run()

    async def close(self) -> None:
        for transport in self.made:
            await transport.aclose()


async def tokens(transport: Transport, job_id: str, texts: Iterator[str] | list[str]) -> list[int]:
    return await transport.publish_many(job_id, [Event("token", {"text": t}) for t in texts])


async def read_n(transport: Transport, job_id: str, after: int, count: int) -> list[Event]:
    """The next `count` events after seq `after`, as one resumed client would receive them."""
    events: list[Event] = []
    async with aclosing(transport.read(job_id, after)) as reader:  # type: ignore[type-var]
        async for event in reader:
            events.append(event)
            if len(events) == count or event.type == "done":
                break
    return events


async def list_side(redis: Redis, job_id: str) -> list[bytes]:
    k = keys(job_id)
    return [*await redis.lrange(k.log, 0, -1), *await redis.lrange(k.list, 0, -1)]


async def stream_side(redis: Redis, job_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (entry_id, fields[b"e"]) for entry_id, fields in await redis.xrange(keys(job_id).stream)
    ]


def seqs(raw: list[bytes]) -> list[int]:
    return [Event.from_json(entry).seq for entry in raw]
