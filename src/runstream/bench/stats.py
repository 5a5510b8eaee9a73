"""Latency percentiles and the delivery check (lost, duplicated, out of order)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile: the smallest value with at least `pct`% of values <= it.

    Always a measured value, never an interpolation, so a p99.9 taken from fewer than
    1,000 samples is simply the maximum.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    # Exact arithmetic: in floats, 99.9 / 100 * 1000 is 999.0000000000001, rank 1000.
    rank = math.ceil(Fraction(str(pct)) * len(ordered) / 100)
    return ordered[max(rank, 1) - 1]


def percentile_label(pct: float) -> str:
    return f"p{pct:g}"


def summarize_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in milliseconds of latencies given in seconds."""
    if not latencies_s:
        return {}
    ordered = sorted(latencies_s)
    summary = {percentile_label(p): percentile(ordered, p) * 1000 for p in PERCENTILES}
    summary["max"] = ordered[-1] * 1000
    summary["mean"] = sum(ordered) / len(ordered) * 1000
    return summary


@dataclass(slots=True)
class Delivery:
    """What a consumer received, checked against what its producer sent."""

    expected: int
    received: int
    lost: int
    duplicated: int
    out_of_order: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.out_of_order == 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class DeliveryCheck:
    """Counts faults in a received sequence of indices, where `0..expected-1` were sent.

    - duplicated: an index received again (each extra copy counts once);
    - out of order: an index received for the first time after a higher one;
    - lost: an index in `0..expected-1` never received. An index outside that range was
      never sent, so it counts as duplicated. `expected` may be set after the fact (end to
      end, it is the job's last seq, read from Redis once the job is done).
    """

    def __init__(self, expected: int = 0) -> None:
        self.expected = expected
        self._seen: set[int] = set()
        self._highest = -1
        self.received = 0
        self.duplicated = 0
        self.out_of_order = 0

    def add(self, index: int) -> None:
        self.received += 1
        if index in self._seen:
            self.duplicated += 1
            return
        self._seen.add(index)
        if index < self._highest:
            self.out_of_order += 1
        self._highest = max(self._highest, index)

    def add_all(self, indices: Iterable[int]) -> None:
        for index in indices:
            self.add(index)

    def result(self) -> Delivery:
        delivered = sum(1 for index in self._seen if 0 <= index < self.expected)
        extra = len(self._seen) - delivered
        lost = self.expected - delivered
        return Delivery(
            self.expected, self.received, lost, self.duplicated + extra, self.out_of_order
        )
