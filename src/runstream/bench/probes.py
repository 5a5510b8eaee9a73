"""What the benchmark reads around each run: Redis counters, and processes' CPU and memory.

Redis figures come from `INFO commandstats` (calls per command, before and after a run;
https://redis.io/docs/latest/commands/info/) and `INFO clients` (connected clients,
sampled during the run). `INFO` itself is left out of the command count, since only the
benchmark sends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

SAMPLE_INTERVAL = 0.05
_PROBE_COMMANDS = frozenset({"info"})


@contextlib.asynccontextmanager
async def sampling(sampler: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `sampler` (an endless sampling loop) in the background while the block runs."""
    task = asyncio.create_task(sampler)
    try:
        yield
    finally:
        # On Python 3.11 a cancel that lands as redis-py finishes sending a command can be
        # lost inside its `wait_for`; the endless loop would then never end. Cancel until
        # the task has really stopped.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def command_calls(redis: Redis) -> dict[str, int]:
    """Calls per command since the server started (or its last CONFIG RESETSTAT)."""
    info: Mapping[str, Any] = await redis.info("commandstats")
    calls = {}
    for name, stats in info.items():
        if name.startswith("cmdstat_") and isinstance(stats, Mapping):
            calls[name.removeprefix("cmdstat_")] = int(stats["calls"])
    return calls


def calls_between(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Calls made between two `command_calls` readings, without the benchmark's probes.

    Commands a Lua script runs are counted by Redis as well as the EVALSHA that ran them.
    """
    diff = {name: count - before.get(name, 0) for name, count in after.items()}
    return {
        name: count
        for name, count in sorted(diff.items())
        if count > 0 and name not in _PROBE_COMMANDS
    }


async def connected_clients(redis: Redis) -> int:
    info: Mapping[str, Any] = await redis.info("clients")
    return int(info["connected_clients"])


@dataclass(slots=True)
class RedisUsage:
    """Commands and connections one benchmark run cost the Redis server."""

    commands: dict[str, int] = field(default_factory=dict)
    clients_peak: int = 0

    @property
    def total_commands(self) -> int:
        return sum(self.commands.values())


@contextlib.asynccontextmanager
async def redis_usage(
    redis: Redis, clients_baseline: int | None = None
) -> AsyncIterator[RedisUsage]:
    """Measure the commands sent and peak connections opened while the block runs.

    Connections are counted above `clients_baseline`, by default the number open when the
    block starts, so the probe's own connection does not count. End to end, the baseline
    is taken before the API and worker start, so their connections count.
    """
    usage = RedisUsage()
    baseline = await connected_clients(redis) if clients_baseline is None else clients_baseline
    before = await command_calls(redis)
    try:
        async with sampling(_sample_clients(redis, baseline, usage)):
            yield usage
    finally:
        usage.clients_peak = max(usage.clients_peak, await connected_clients(redis) - baseline)
        usage.commands = calls_between(before, await command_calls(redis))


async def _sample_clients(redis: Redis, baseline: int, usage: RedisUsage) -> None:
    while True:
        usage.clients_peak = max(usage.clients_peak, await connected_clients(redis) - baseline)
        await asyncio.sleep(SAMPLE_INTERVAL)


@dataclass(slots=True)
class ProcessUsage:
    cpu_s: float
    rss_peak_mb: float

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": self.cpu_s, "rss_peak_mb": self.rss_peak_mb}


class SelfUsage:
    """CPU seconds of this process over a run, and its peak resident memory so far."""

    def __init__(self) -> None:
        self._cpu_start = time.process_time()

    def result(self) -> ProcessUsage:
        # ru_maxrss is in KiB on Linux: the peak over the process's life, not this run's.
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return ProcessUsage(time.process_time() - self._cpu_start, peak_kib / 1024)
