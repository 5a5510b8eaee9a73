"""Helpers shared by the benchmark's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from runstream.bench.probes import ProcessUsage, RedisUsage
from runstream.bench.processes import free_port
from runstream.bench.results import Measured, ScenarioResult
from runstream.bench.scenarios import Channel
from runstream.bench.stats import Delivery
from runstream.core.events import Event


def closed_url(password: str = "") -> str:
    """A Redis URL on a loopback port this test bound and closed again: nothing answers."""
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{free_port()}/0"


def crafted_result(workload: str, scenario: str, latencies: list[float]) -> ScenarioResult:
    n = len(latencies)
    measured = Measured(latencies, Delivery(n, n, 0, 0, 0), 1.0, n)
    return ScenarioResult(workload, scenario, measured, RedisUsage(), {"bench": ProcessUsage(1, 1)})


class DroppingChannel(Channel):
    """Wraps a channel and never publishes the events whose index is in `drop` (nor `done`)."""

    def __init__(self, inner: Channel, drop: set[int], *, drop_done: bool = False) -> None:
        self.inner, self.drop, self.name = inner, drop, inner.name
        self.drop_done = drop_done

    async def publish(self, events: Sequence[Event]) -> None:
        kept = [e for e in events if e.payload.get("i") not in self.drop]
        if kept:
            await self.inner.publish(kept)

    async def finish(self) -> None:
        if not self.drop_done:
            await self.inner.finish()

    def receive(self) -> AsyncIterator[Event]:
        return self.inner.receive()

    def keys(self) -> list[str]:
        return self.inner.keys()

    async def aclose(self) -> None:
        await self.inner.aclose()
