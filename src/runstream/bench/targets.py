"""The aims from issue 5, checked against each result and reported as met or missed.

They are reported, never asserted: a missed target does not fail the run (lost,
duplicated or out-of-order events do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runstream.bench.results import ScenarioResult

PACED = ("transport", "e2e", "concurrency")


@dataclass(frozen=True, slots=True)
class Target:
    scenario: str
    workloads: tuple[str, ...]
    label: str
    limit: float
    figure: Callable[[ScenarioResult], float | None]
    at_least: bool = False

    def met(self, value: float) -> bool:
        return value >= self.limit if self.at_least else value <= self.limit


def _ratio(result: ScenarioResult) -> float | None:
    return result.ratio_to_floor


def _p99(result: ScenarioResult) -> float | None:
    return result.latency_ms.get("p99")


def _rate(result: ScenarioResult) -> float | None:
    return result.events_per_s


TARGETS = (
    Target("streams", PACED, "p50 <= 2x floor", 2.0, _ratio),
    Target("streams", ("concurrency",), "p99 <= 5 ms", 5.0, _p99),
    Target("list-blocking", PACED, "p50 <= 3x floor", 3.0, _ratio),
    Target("list-poll", PACED, "p50 <= 10x floor", 10.0, _ratio),
    Target("streams", ("throughput",), ">= 50,000 events/s", 50_000.0, _rate, at_least=True),
)


def evaluate(result: ScenarioResult) -> list[dict[str, Any]]:
    """The targets that apply to `result`, each with its figure and whether it is met."""
    verdicts = []
    for target in TARGETS:
        if result.scenario != target.scenario or result.workload not in target.workloads:
            continue
        value = target.figure(result)
        verdicts.append(
            {
                "target": target.label,
                "value": value,
                "met": value is not None and target.met(value),
            }
        )
    return verdicts
