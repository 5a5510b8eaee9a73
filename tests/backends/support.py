"""The contract-test factory: one backend mode on one Redis server, and helpers to read."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from runstream.core.events import Event
from runstream.core.keys import JobKeys, KeySpace
from runstream.core.redis_client import connect_redis
from runstream.core.settings import Settings, load_settings
from runstream.core.transport import Transport, open_transport

MODES: dict[str, dict[str, str]] = {
    "list-poll": {"backend": "list", "list_mode": "poll"},
    "list-blocking": {"backend": "list", "list_mode": "blocking"},
    "list-reliable": {"backend": "list", "list_mode": "reliable"},
    "streams": {"backend": "streams"},
}
REPLAY_MODES = ("list-reliable", "streams")
SERVERS = ("fake", "real")

# Small blocking and idle times keep every test quick; each test overrides what it probes.
TEST_SETTINGS: dict[str, Any] = {
    "block_ms": 150,
    "idle_timeout": 5.0,
    "socket_timeout": 5.0,
    "poll_interval_min": 0.001,
    "poll_interval_max": 0.01,
    "key_prefix": "rs",
    "ttl_after_done": 3600,
    "max_len": 100_000,
    "read_count": 500,
    "dual_write": False,
}


def cases(modes: Iterable[str] = MODES, servers: Iterable[str] = SERVERS) -> list[Any]:
    """Parameters for the `case` fixture (use with `indirect=True`), ids like `streams-real`."""
    servers = tuple(servers)
    return [pytest.param((m, s), id=f"{m}-{s}") for m in modes for s in servers]


@dataclass
class Case:
    """One backend mode on one server; builds transports and closes them after the test."""

    mode: str
    server: str
    redis: Redis
    redis_url: str | None = None
    _closers: list[Any] = field(default_factory=list)

    @property
    def replays(self) -> bool:
        """True for the modes that keep events after reading them (a second read replays)."""
        return self.mode in REPLAY_MODES

    def settings(self, **overrides: Any) -> Settings:
        url = {"redis_url": self.redis_url} if self.redis_url else {}
        return load_settings(**{**TEST_SETTINGS, **url, **MODES[self.mode], **overrides})

    def transport(self, redis: Redis | None = None, **overrides: Any) -> Transport:
        """A transport of this case's mode over `redis` (default: the case's client)."""
        transport = open_transport(self.settings(**overrides), redis=redis or self.redis)
        self._closers.append(transport.aclose)
        return transport

    def pool(self, **overrides: Any) -> Redis:
        """A client built like production builds it (real server), else the fake client."""
        if self.redis_url is None:
            return self.redis
        client = connect_redis(self.settings(**overrides))
        self._closers.append(client.aclose)
        return client

    def keys(self, job_id: str) -> JobKeys:
        return KeySpace(TEST_SETTINGS["key_prefix"]).job(job_id)

    async def raw_entries(self, job_id: str) -> list[bytes]:
        """The stored bytes of the job's unread events (list) or all its events (stream)."""
        keys = self.keys(job_id)
        if self.mode == "streams":
            return [fields[b"e"] for _, fields in await self.redis.xrange(keys.stream)]
        entries: list[bytes] = await self.redis.lrange(keys.list, 0, -1)
        return entries

    async def close(self) -> None:
        for close in reversed(self._closers):
            await close()


async def collect(events: AsyncIterator[Event], limit: int | None = None) -> list[Event]:
    """Every event of a read, or the first `limit` (then the read is closed)."""
    received: list[Event] = []
    try:
        async for event in events:
            received.append(event)
            if len(received) == limit:
                break
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return received


def seqs(events: Iterable[Event]) -> list[int]:
    return [event.seq for event in events]


def outline(events: Iterable[Event]) -> list[tuple[str, int]]:
    """(type, seq) of each event: enough to compare a read with the expected sequence."""
    return [(event.type, event.seq) for event in events]


def tokens(count: int, first: int = 0) -> list[Event]:
    return [Event("token", {"i": i}) for i in range(first, first + count)]


async def delete_stored(case: Case, job_id: str, doomed: set[int]) -> None:
    """Remove the stored events with these seqs by hand, as a lost write would."""
    keys = case.keys(job_id)
    if case.mode == "streams":
        assert await case.redis.xdel(keys.stream, *(f"0-{seq}" for seq in doomed)) == len(doomed)
        return
    for raw in await case.redis.lrange(keys.list, 0, -1):
        if Event.from_json(raw).seq in doomed:
            assert await case.redis.lrem(keys.list, 1, raw) == 1
