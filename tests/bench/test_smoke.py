"""`runstream bench --smoke` on the test Redis: every backend, the report's shape and figures.

Only shape, presence and delivery are checked here; speed belongs to the benchmark's own
report (targets are met or missed there, never asserted in a test).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from bench.support import DroppingChannel
from runstream.bench import workloads
from runstream.bench.params import BenchParams
from runstream.bench.progress import Tracker
from runstream.bench.runner import Runner
from runstream.bench.scenarios import BACKENDS, open_channel

LATENCY_FIGURES = ["p50", "p90", "p99", "p99.9", "max", "mean"]


async def run_smoke(redis_url: str, chosen: Sequence[str]) -> dict[str, Any]:
    params = BenchParams(redis_url=redis_url, workloads=tuple(chosen)).smoke_sized()
    with Tracker(None) as tracker:
        report = await Runner(params, tracker).run()
    data: dict[str, Any] = json.loads(json.dumps(report.as_dict()))
    return data


def assert_figures_present_and_positive(result: dict[str, Any]) -> None:
    name = f"{result['workload']} {result['scenario']}"
    assert sorted(result["latency_ms"]) == sorted(LATENCY_FIGURES), name
    assert all(result["latency_ms"][f] > 0 for f in LATENCY_FIGURES), name
    assert result["events_per_s"] > 0, name
    assert result["redis"]["commands"] > 0, name
    assert result["redis"]["commands_per_event"] > 0, name
    assert result["redis"]["clients_peak"] > 0, name
    assert result["processes"], name
    for usage in result["processes"].values():
        assert usage["cpu_s"] > 0, name
        assert usage["rss_peak_mb"] > 0, name
    delivery = result["delivery"]
    assert delivery["received"] == delivery["expected"] > 0, name
    assert (delivery["lost"], delivery["duplicated"], delivery["out_of_order"]) == (0, 0, 0), name
    assert 0 < len(result["latency_samples_ms"]) <= delivery["received"], name


async def test_smoke_transport_and_throughput_cover_every_backend(
    redis_url: str, real_redis: Redis
) -> None:
    data = await run_smoke(redis_url, ["transport", "throughput"])

    assert data["ok"] is True
    assert sorted(data["header"]) == [
        "cpu_count",
        "date",
        "hiredis",
        "load_average",
        "params",
        "platform",
        "python",
        "redis_py",
        "redis_url",
        "redis_version",
    ]
    assert data["header"]["params"]["smoke"] is True
    rows = [(r["workload"], r["scenario"]) for r in data["results"]]
    assert rows == [
        ("transport", "floor-ping"),
        ("transport", "floor-xread"),
        ("transport", "naive"),
        *(("transport", backend) for backend in BACKENDS),
        *(("throughput", backend) for backend in BACKENDS),
    ]
    for result in data["results"]:
        assert_figures_present_and_positive(result)
    floor = data["results"][1]["latency_ms"]["p50"]
    assert data["floor_p50_ms"] == floor
    streams = data["results"][6]
    assert streams["ratio_to_floor_p50"] == streams["latency_ms"]["p50"] / floor
    assert [t["target"] for t in streams["targets"]] == ["p50 <= 2x floor"]
    assert [t["target"] for t in data["results"][-1]["targets"]] == [">= 50,000 events/s"]
    assert await real_redis.keys("rsbench:*") == []


async def test_smoke_e2e_through_api_and_worker_processes(
    redis_url: str, real_redis: Redis
) -> None:
    params = BenchParams(
        redis_url=redis_url, backends=("streams",), workloads=("e2e", "concurrency"), jobs=3
    ).smoke_sized()
    with Tracker(None) as tracker:
        report = await Runner(params, tracker).run()
    data = json.loads(json.dumps(report.as_dict()))

    assert data["ok"] is True
    rows = [(r["workload"], r["scenario"]) for r in data["results"]]
    assert rows == [
        ("transport", "floor-ping"),
        ("transport", "floor-xread"),
        ("e2e", "streams"),
        ("concurrency", "streams"),
    ]
    for result in data["results"]:
        assert_figures_present_and_positive(result)
    e2e, concurrency = data["results"][2:]
    assert sorted(e2e["processes"]) == ["api", "worker"]
    assert e2e["params"]["jobs"] == 1
    assert concurrency["params"]["jobs"] == 3
    # Every job is the demo answer: the same number of stored events each.
    assert concurrency["delivery"]["expected"] == 3 * e2e["delivery"]["expected"]
    assert await real_redis.keys("rsbench:*") == []


@pytest.mark.parametrize("scenario", ["floor-xread", "streams", "list-blocking"])
async def test_paced_run_reports_events_that_never_arrived_as_lost(
    redis_url: str, real_redis: Redis, scenario: str
) -> None:
    channel = DroppingChannel(open_channel(scenario, redis_url, f"drop-{scenario}"), {3, 7})
    try:
        latencies, check, _ = await workloads.run_paced(channel, 10, 500.0, 8)
    finally:
        await channel.aclose()

    assert len(latencies) == 8
    assert check.result().as_dict() == {
        "expected": 11,
        "received": 9,
        "lost": 2,
        "duplicated": 0,
        "out_of_order": 0,
    }


async def test_a_run_whose_done_never_comes_ends_and_counts_done_lost(
    redis_url: str, real_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workloads, "DRAIN_TIMEOUT", 0.5)
    inner = open_channel("list-blocking", redis_url, "no-done")
    channel = DroppingChannel(inner, set(), drop_done=True)
    try:
        latencies, check, _ = await workloads.run_paced(channel, 5, 500.0, 8)
    finally:
        await channel.aclose()

    assert len(latencies) == 5
    assert check.result().as_dict() == {
        "expected": 6,
        "received": 5,
        "lost": 1,
        "duplicated": 0,
        "out_of_order": 0,
    }
