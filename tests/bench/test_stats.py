"""Percentiles, the delivery check and the targets, on values whose answers are known."""

from __future__ import annotations

import pytest

from runstream.bench.probes import ProcessUsage, RedisUsage, calls_between
from runstream.bench.results import Measured, ScenarioResult
from runstream.bench.stats import Delivery, DeliveryCheck, percentile, summarize_ms
from runstream.bench.targets import evaluate


@pytest.mark.parametrize(
    ("pct", "expected"), [(50, 500), (90, 900), (99, 990), (99.9, 999), (100, 1000)]
)
def test_percentile_is_nearest_rank_of_1_to_1000(pct: float, expected: int) -> None:
    values = list(range(1000, 0, -1))

    assert percentile(values, pct) == expected


def test_percentile_of_few_values_is_a_measured_value() -> None:
    values = [7.0, 3.0, 5.0]

    assert [percentile(values, p) for p in (1, 33.3, 34, 50, 66.7, 99.9)] == [
        3.0,
        3.0,
        5.0,
        5.0,
        7.0,
        7.0,
    ]


def test_percentile_rejects_no_values_and_bad_percent() -> None:
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], got 0"):
        percentile([1.0], 0)


def test_summarize_ms_gives_every_figure_in_milliseconds() -> None:
    seconds = [0.5, 0.0625, 0.25, 0.125]

    assert summarize_ms(seconds) == {
        "p50": 125.0,
        "p90": 500.0,
        "p99": 500.0,
        "p99.9": 500.0,
        "max": 500.0,
        "mean": 234.375,
    }
    assert summarize_ms([]) == {}


def test_delivery_check_counts_each_fault_exactly() -> None:
    check = DeliveryCheck(expected=8)

    # 4 and 6 never come, 2 comes after 3 and again, 7 comes twice.
    check.add_all([0, 1, 3, 2, 2, 5, 7, 7])

    assert check.result() == Delivery(expected=8, received=8, lost=2, duplicated=2, out_of_order=1)
    assert not check.result().ok


def test_delivery_check_counts_a_never_sent_index_as_duplicated() -> None:
    check = DeliveryCheck()
    check.add_all([0, 1, 2, 5])

    check.expected = 3

    assert check.result() == Delivery(expected=3, received=4, lost=0, duplicated=1, out_of_order=0)


def test_delivery_check_of_a_clean_run_is_ok() -> None:
    check = DeliveryCheck(expected=3)
    check.add_all([0, 1, 2])

    assert check.result() == Delivery(3, 3, 0, 0, 0)
    assert check.result().ok


def test_calls_between_drops_info_and_unchanged_commands() -> None:
    before = {"info": 3, "xadd": 10, "get": 4}
    after = {"info": 9, "xadd": 25, "get": 4, "evalsha": 2}

    assert calls_between(before, after) == {"evalsha": 2, "xadd": 15}


def _result(
    workload: str, scenario: str, latencies: list[float], floor_ms: float
) -> ScenarioResult:
    delivery = Delivery(len(latencies), len(latencies), 0, 0, 0)
    measured = Measured(latencies, delivery, elapsed_s=2.0, stored_events=len(latencies))
    usage = RedisUsage({"evalsha": 8}, clients_peak=2)
    return ScenarioResult(
        workload,
        scenario,
        measured,
        usage,
        {"bench": ProcessUsage(0.5, 40.0)},
        floor_p50_ms=floor_ms,
    )


def test_targets_report_met_and_missed_against_the_floor() -> None:
    streams = _result("concurrency", "streams", [0.001, 0.002, 0.003, 0.008], floor_ms=1.0)
    blocking = _result("transport", "list-blocking", [0.004, 0.004], floor_ms=1.0)

    assert streams.ratio_to_floor == 2.0
    assert streams.events_per_s == 2.0
    assert streams.commands_per_event == 2.0
    assert evaluate(streams) == [
        {"target": "p50 <= 2x floor", "value": 2.0, "met": True},
        {"target": "p99 <= 5 ms", "value": 8.0, "met": False},
    ]
    assert evaluate(blocking) == [{"target": "p50 <= 3x floor", "value": 4.0, "met": False}]
    assert evaluate(_result("throughput", "list-poll", [0.5], floor_ms=1.0)) == []
