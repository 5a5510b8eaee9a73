"""Runs the chosen workloads over every scenario, measuring each run the same way."""

from __future__ import annotations

import logging
import os
import platform
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from redis.asyncio import Redis

from runstream.bench import workloads
from runstream.bench.params import BenchParams
from runstream.bench.probes import ProcessUsage, SelfUsage, redis_usage
from runstream.bench.progress import Tracker
from runstream.bench.results import BenchReport, Measured, ScenarioResult
from runstream.bench.scenarios import FLOOR_PING, FLOOR_XREAD, KEY_PREFIX, NAIVE, open_channel
from runstream.bench.stats import Delivery, DeliveryCheck
from runstream.bench.targets import evaluate
from runstream.core.redis_client import masked_url

logger = logging.getLogger(__name__)

Processes = dict[str, ProcessUsage]
Work = Callable[[list[str]], Awaitable[tuple[Measured, Processes]]]
"""A measured run: it adds the Redis keys it wrote to the list, to be deleted afterwards."""


class Runner:
    """Runs one benchmark: the floor first, then each workload for each scenario."""

    def __init__(self, params: BenchParams, tracker: Tracker) -> None:
        self.params = params
        self.tracker = tracker
        self.probe = Redis.from_url(params.redis_url, socket_timeout=10)
        self.results: list[ScenarioResult] = []
        self.floor_p50_ms: float | None = None

    async def run(self) -> BenchReport:
        try:
            header = await self.header()
            await self.floor()
            await self.run_workloads()
        finally:
            await self.probe.aclose()
        for result in self.results:
            result.targets = evaluate(result)
        # End to end, each backend's processes serve e2e then concurrency: regroup by workload.
        order = ["transport", *self.params.workloads]
        self.results.sort(key=lambda result: order.index(result.workload))
        return BenchReport(header, self.floor_p50_ms, self.results)

    async def header(self) -> dict[str, Any]:
        server: Any = await self.probe.info("server")
        return {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "redis_url": masked_url(self.params.redis_url),
            "redis_version": server.get("redis_version", "?"),
            "redis_py": metadata.version("redis"),
            "hiredis": _version("hiredis"),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "cpu_count": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "params": {**self.params.as_dict(), "redis_url": masked_url(self.params.redis_url)},
        }

    async def floor(self) -> None:
        """The PING round trip and the raw XADD -> XREAD BLOCK loop, always measured."""
        count, rate = self.params.count, self.params.rate

        async def ping(_: list[str]) -> tuple[Measured, Processes]:
            own = SelfUsage()
            with self.tracker.task("floor", FLOOR_PING, count) as advance:
                latencies, elapsed = await workloads.run_ping(
                    self.params.redis_url, count, rate, advance
                )
            delivery = Delivery(count, count, 0, 0, 0)
            return Measured(latencies, delivery, elapsed, count + 1), {"bench": own.result()}

        await self.measure("transport", FLOOR_PING, ping)
        await self.paced("transport", FLOOR_XREAD)
        self.floor_p50_ms = self.results[-1].latency_ms.get("p50")

    async def run_workloads(self) -> None:
        chosen = self.params.workloads
        if "transport" in chosen:
            await self.paced("transport", NAIVE)
            for backend in self.params.backends:
                await self.paced("transport", backend)
        if "throughput" in chosen:
            for backend in self.params.backends:
                await self.saturated(backend)
        through_api = [w for w in chosen if w in ("e2e", "concurrency")]
        if through_api:
            from runstream.bench import endtoend

            await endtoend.run(self, through_api)

    async def paced(self, workload: str, scenario: str) -> None:
        count = self.params.count

        async def work(keys: list[str]) -> tuple[Measured, Processes]:
            channel = open_channel(scenario, self.params.redis_url, _job_id(workload, scenario))
            keys.extend(channel.keys())
            own = SelfUsage()
            try:
                with self.tracker.task(workload, scenario, count) as advance:
                    latencies, check, elapsed = await workloads.run_paced(
                        channel, count, self.params.rate, self.params.payload_bytes, advance
                    )
            finally:
                await channel.aclose()
            return _measured(latencies, check, elapsed), {"bench": own.result()}

        await self.measure(workload, scenario, work)

    async def saturated(self, backend: str) -> None:
        params = self.params

        async def work(keys: list[str]) -> tuple[Measured, Processes]:
            channel = open_channel(backend, params.redis_url, _job_id("throughput", backend))
            keys.extend(channel.keys())
            own = SelfUsage()
            try:
                with self.tracker.task("throughput", backend, None) as advance:
                    latencies, check, elapsed = await workloads.run_throughput(
                        channel, params.duration, params.batch, params.payload_bytes, advance
                    )
            finally:
                await channel.aclose()
            return _measured(latencies, check, elapsed), {"bench": own.result()}

        await self.measure("throughput", backend, work)

    async def measure(
        self, workload: str, scenario: str, work: Work, *, clients_baseline: int | None = None
    ) -> ScenarioResult:
        """Run `work` inside the Redis probes and keep its result."""
        logger.debug("bench: %s %s starting", workload, scenario)
        keys: list[str] = []
        try:
            async with redis_usage(self.probe, clients_baseline) as usage:
                measured, processes = await work(keys)
        finally:
            await self.discard(keys)
        result = ScenarioResult(
            workload,
            scenario,
            measured,
            usage,
            processes,
            params=self._run_params(workload),
            floor_p50_ms=self.floor_p50_ms,
        )
        self.results.append(result)
        return result

    async def discard(self, keys: list[str]) -> None:
        """Delete the run's keys, and any other key a backend made under the bench prefix."""
        found = [key async for key in self.probe.scan_iter(match=f"{KEY_PREFIX}:*", count=1000)]
        everything = [*keys, *found]
        for start in range(0, len(everything), 1000):
            await self.probe.delete(*everything[start : start + 1000])

    def _run_params(self, workload: str) -> dict[str, Any]:
        p = self.params
        if workload == "throughput":
            return {"duration_s": p.duration, "batch": p.batch, "payload_bytes": p.payload_bytes}
        jobs = p.jobs if workload == "concurrency" else 1
        return {"jobs": jobs, "rate": p.rate, "events_per_job": p.count, "bytes": p.payload_bytes}


def _measured(latencies: list[float], check: DeliveryCheck, elapsed: float) -> Measured:
    delivery = check.result()
    # `done` is in the delivery check; the warm-up event is stored too.
    return Measured(latencies, delivery, elapsed, delivery.expected + 1)


def _job_id(workload: str, scenario: str) -> str:
    return f"{workload}-{scenario}-{secrets.token_hex(4)}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
