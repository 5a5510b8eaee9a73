"""The report: a header that makes a run reproducible, two tables, the targets, JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from runstream.bench.results import BenchReport, ScenarioResult
from runstream.bench.stats import PERCENTILES, percentile_label

LATENCY_COLUMNS = [percentile_label(p) for p in PERCENTILES] + ["max"]


def render(report: BenchReport, console: Console) -> None:
    console.print(header_text(report.header))
    console.print(latency_table(report))
    console.print(cost_table(report))
    for line in failures(report):
        console.print(f"[bold red]FAIL[/] {line}")
    if report.ok:
        console.print("[green]every event delivered once, in order, in every run[/]")


def header_text(header: dict[str, Any]) -> str:
    params = header["params"]
    return "\n".join(
        [
            f"[bold]runstream bench[/] {header['date']}  Redis {header['redis_version']} at "
            f"{header['redis_url']}",
            f"redis-py {header['redis_py']}, hiredis {header['hiredis']}, Python "
            f"{header['python']}, {header['cpu_count']} CPUs, load average "
            f"{' '.join(str(x) for x in header['load_average'])}, {header['platform']}",
            f"backends {','.join(params['backends'])}; workloads {','.join(params['workloads'])}; "
            f"{params['events_per_job']} events/job at {params['rate']:g}/s; "
            f"{params['jobs']} jobs (concurrency); throughput {params['duration']:g} s in batches "
            f"of {params['batch']}; payload {params['payload_bytes']} B"
            + ("; SMOKE sizes" if params["smoke"] else ""),
        ]
    )


def latency_table(report: BenchReport) -> Table:
    floor = report.floor_p50_ms
    title = "Latency, ms (send ts to receive, one clock)"
    if floor:
        title += f"; floor p50 = {floor:.3f} ms (raw XADD -> XREAD BLOCK)"
    table = Table(title=title, title_justify="left")
    for name in ["workload", "scenario", "n", *LATENCY_COLUMNS, "x floor", "targets"]:
        table.add_column(
            name, justify="left" if name in ("workload", "scenario", "targets") else "right"
        )
    for result in report.results:
        latency = result.latency_ms
        ratio = result.ratio_to_floor
        table.add_row(
            result.workload,
            result.scenario,
            str(len(result.measured.latencies_s)),
            *(f"{latency[c]:.3f}" if c in latency else "-" for c in LATENCY_COLUMNS),
            "-" if ratio is None else f"{ratio:.2f}",
            targets_text(result, latency_only=True),
        )
    return table


def cost_table(report: BenchReport) -> Table:
    table = Table(
        title="Rate and cost",
        title_justify="left",
        caption="CPU s and peak RSS: API + worker end to end, else the benchmark's own process;"
        " Redis conns: peak connections opened; lost/dup/ooo must be 0/0/0",
        caption_justify="left",
    )
    for name in [
        "workload",
        "scenario",
        "events/s",
        "cmds/event",
        "Redis conns",
        "CPU s",
        "peak RSS MB",
        "lost/dup/ooo",
        "targets",
    ]:
        table.add_column(
            name, justify="left" if name in ("workload", "scenario", "targets") else "right"
        )
    for result in report.results:
        delivery = result.measured.delivery
        faults = f"{delivery.lost}/{delivery.duplicated}/{delivery.out_of_order}"
        table.add_row(
            result.workload,
            result.scenario,
            f"{result.events_per_s:,.0f}",
            f"{result.commands_per_event:.2f}",
            str(result.redis.clients_peak),
            _per_process(result, "cpu_s", "{:.2f}"),
            _per_process(result, "rss_peak_mb", "{:.0f}"),
            faults if delivery.ok else f"[bold red]{faults}[/]",
            targets_text(result, latency_only=False),
        )
    return table


def _per_process(result: ScenarioResult, figure: str, fmt: str) -> str:
    """`api + worker` figures end to end; `(bench)` where the benchmark did the work."""
    values = {name: fmt.format(usage.as_dict()[figure]) for name, usage in result.processes.items()}
    if "api" in values:
        return f"{values['api']} + {values.get('worker', '-')}"
    return " ".join(f"{value} ({name})" for name, value in values.items())


def targets_text(result: ScenarioResult, *, latency_only: bool) -> str:
    parts = []
    for verdict in result.targets:
        is_latency = "events/s" not in verdict["target"]
        if is_latency != latency_only:
            continue
        mark = "[green]met[/]" if verdict["met"] else "[red]missed[/]"
        parts.append(f"{verdict['target']}: {mark}")
    return "; ".join(parts)


def failures(report: BenchReport) -> list[str]:
    """One line per run that lost, duplicated or reordered events."""
    lines = []
    for result in report.results:
        d = result.measured.delivery
        if not d.ok:
            lines.append(
                f"{result.workload} {result.scenario}: {d.lost} lost, {d.duplicated} duplicated, "
                f"{d.out_of_order} out of order of {d.expected} sent"
            )
    return lines


def write_json(report: BenchReport, path: Path) -> None:
    path.write_text(json.dumps(report.as_dict(), indent=1) + "\n", encoding="utf-8")
