"""The benchmark's parameters, checked once, printed in the report so a run can be redone."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from runstream.bench.results import WORKLOADS
from runstream.bench.scenarios import BACKENDS
from runstream.core.errors import ConfigError

MAX_JOBS = 1000


@dataclass(frozen=True, slots=True)
class BenchParams:
    """What to run and how hard.

    `duration` is the seconds of each paced run (transport, e2e, concurrency) and of each
    throughput run; `events`, when given, fixes the events per job of a paced run
    instead (its duration is then `events / rate`).
    """

    redis_url: str
    backends: tuple[str, ...] = BACKENDS
    workloads: tuple[str, ...] = WORKLOADS
    duration: float = 3.0
    events: int | None = None
    rate: float = 50.0
    jobs: int = 100
    payload_bytes: int = 32
    batch: int = 500
    smoke: bool = False

    def __post_init__(self) -> None:
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise ConfigError(f"--backends: {unknown or 'none'} not in {', '.join(BACKENDS)}")
        unknown = [w for w in self.workloads if w not in WORKLOADS]
        if unknown or not self.workloads:
            raise ConfigError(f"--workloads: {unknown or 'none'} not in {', '.join(WORKLOADS)}")
        _positive("--duration", self.duration)
        _positive("--rate", self.rate)
        if self.events is not None and self.events < 1:
            raise ConfigError(f"--events: must be at least 1, got {self.events}")
        if not 1 <= self.jobs <= MAX_JOBS:
            raise ConfigError(f"--jobs: must be 1..{MAX_JOBS}, got {self.jobs}")
        if not 0 <= self.payload_bytes <= 1_000_000:
            raise ConfigError(f"--payload-bytes: must be 0..1000000, got {self.payload_bytes}")
        if not 1 <= self.batch <= 10_000:
            raise ConfigError(f"--batch: must be 1..10000, got {self.batch}")

    @property
    def count(self) -> int:
        """Events per job of a paced run."""
        return self.events if self.events is not None else max(1, round(self.duration * self.rate))

    def smoke_sized(self) -> BenchParams:
        """Tiny sizes: every chosen backend and workload in a few seconds."""
        return replace(
            self, duration=0.3, events=30, rate=100.0, jobs=min(self.jobs, 4), smoke=True
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["events_per_job"] = self.count
        return data


def _positive(option: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{option}: must be a positive number, got {value}")
