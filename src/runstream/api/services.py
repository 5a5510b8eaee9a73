"""What the API's routes share for the life of the process: Redis, transport, job queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request
from redis.asyncio import Redis

from runstream.core.settings import Settings
from runstream.core.transport import Transport
from runstream.worker.queue import JobQueue

# Pool connections kept free of SSE readers, so submit, status and healthz still get one
# when every reader slot is taken.
CONTROL_CONNECTIONS_MAX = 4


def reader_slots(settings: Settings) -> int:
    """How many SSE readers may hold a Redis connection at once."""
    reserve = min(CONTROL_CONNECTIONS_MAX, settings.max_connections // 2)
    return settings.max_connections - reserve


@dataclass
class Services:
    """The objects the lifespan opens; routes reach them through `get_services`."""

    settings: Settings
    redis: Redis
    transport: Transport
    queue: JobQueue
    readers: asyncio.Semaphore = field(init=False)
    active_readers: int = 0

    def __post_init__(self) -> None:
        self.readers = asyncio.Semaphore(reader_slots(self.settings))


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
