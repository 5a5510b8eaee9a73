"""One measured run of one scenario under one workload, and its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runstream.bench.probes import ProcessUsage, RedisUsage
from runstream.bench.stats import Delivery, summarize_ms

WORKLOADS = ("transport", "e2e", "throughput", "concurrency")


@dataclass(slots=True)
class Measured:
    """What a workload observed: per-event latencies and the delivery check."""

    latencies_s: list[float]
    delivery: Delivery
    elapsed_s: float
    stored_events: int
    """Events Redis stored for the run, warm-up and `done` included: the divisor of the
    commands-per-event figure, since every stored event had to be written and read."""
    backlog: int = 0
    """End to end: events already waiting in Redis when the client's stream opened, so
    delivered but not timed."""


@dataclass(slots=True)
class ScenarioResult:
    workload: str
    scenario: str
    measured: Measured
    redis: RedisUsage
    processes: dict[str, ProcessUsage]
    params: dict[str, Any] = field(default_factory=dict)
    floor_p50_ms: float | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latency_ms(self) -> dict[str, float]:
        return summarize_ms(self.measured.latencies_s)

    @property
    def events_per_s(self) -> float:
        elapsed = self.measured.elapsed_s
        return self.measured.delivery.received / elapsed if elapsed > 0 else 0.0

    @property
    def commands_per_event(self) -> float:
        stored = self.measured.stored_events
        return self.redis.total_commands / stored if stored else 0.0

    @property
    def ratio_to_floor(self) -> float | None:
        p50 = self.latency_ms.get("p50")
        if p50 is None or not self.floor_p50_ms:
            return None
        return p50 / self.floor_p50_ms

    @property
    def ok(self) -> bool:
        return self.measured.delivery.ok

    def as_dict(self, *, samples: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "workload": self.workload,
            "scenario": self.scenario,
            "params": self.params,
            "latency_ms": self.latency_ms,
            "ratio_to_floor_p50": self.ratio_to_floor,
            "events_per_s": self.events_per_s,
            "elapsed_s": self.measured.elapsed_s,
            "redis": {
                "commands": self.redis.total_commands,
                "commands_per_event": self.commands_per_event,
                "stored_events": self.measured.stored_events,
                "by_command": self.redis.commands,
                "clients_peak": self.redis.clients_peak,
            },
            "processes": {name: usage.as_dict() for name, usage in self.processes.items()},
            "delivery": self.measured.delivery.as_dict(),
            "backlog_events": self.measured.backlog,
            "targets": self.targets,
        }
        if samples:
            data["latency_samples_ms"] = [round(s * 1000, 4) for s in self.measured.latencies_s]
        return data


@dataclass(slots=True)
class BenchReport:
    """Everything one `runstream bench` run measured."""

    header: dict[str, Any]
    floor_p50_ms: float | None
    results: list[ScenarioResult]

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results)

    def as_dict(self, *, samples: bool = True) -> dict[str, Any]:
        return {
            "header": self.header,
            "floor_p50_ms": self.floor_p50_ms,
            "ok": self.ok,
            "results": [result.as_dict(samples=samples) for result in self.results],
        }
