"""Latency CDFs, one panel per workload, one line per scenario (matplotlib, `bench` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runstream.bench.results import BenchReport, ScenarioResult
from runstream.core.errors import RunstreamError

INSTALL_HINT = "pip install 'runstream[bench]'"
# Throughput latencies are queueing time by design (the producer runs ahead), so no panel.
PANEL_ORDER = ("transport", "e2e", "concurrency")
# One colour per scenario in every panel; references dashed.
STYLES = {
    "floor-ping": ("#7f7f7f", "--"),
    "floor-xread": ("#000000", "--"),
    "naive": ("#8c564b", "--"),
    "list-poll": ("#1f77b4", "-"),
    "list-blocking": ("#ff7f0e", "-"),
    "list-reliable": ("#2ca02c", "-"),
    "streams": ("#d62728", "-"),
}


class PlotUnavailable(RunstreamError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Fail early, before a long run, when `--plot` cannot be honoured."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise PlotUnavailable(
            f"--plot needs matplotlib, which is not installed; run: {INSTALL_HINT}"
        ) from err


def plot_cdfs(report: BenchReport, path: Path) -> None:
    """Write a PNG of each scenario's latency CDF (log-scale ms), a panel per workload."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [w for w in PANEL_ORDER if any(r.workload == w for r in report.results)]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False, sharey=True
    )
    for ax, workload in zip(axes[0], panels, strict=True):
        for result in report.results:
            if result.workload == workload and result.measured.latencies_s:
                _draw(ax, result)
        _decorate(ax, workload, report)
    axes[0][0].set_ylabel("fraction of events delivered within")
    header = report.header
    figure.suptitle(
        f"runstream bench {header['date'][:10]}: Redis {header['redis_version']}, "
        f"{header['cpu_count']} CPUs, {header['params']['rate']:g} events/s per job, "
        f"{header['params']['jobs']} jobs in concurrency",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _draw(ax: Any, result: ScenarioResult) -> None:
    values = sorted(s * 1000 for s in result.measured.latencies_s)
    fractions = [(i + 1) / len(values) for i in range(len(values))]
    color, style = STYLES.get(result.scenario, ("#9467bd", "-"))
    label = f"{result.scenario} (p50 {result.latency_ms['p50']:.2f} ms)"
    ax.step(
        values, fractions, where="post", color=color, linestyle=style, linewidth=1.5, label=label
    )


def _decorate(ax: Any, workload: str, report: BenchReport) -> None:
    ax.set_xscale("log")
    ax.set_title(workload)
    ax.set_xlabel("latency, ms (log scale)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    if report.floor_p50_ms:
        label = f"floor p50 {report.floor_p50_ms:.2f} ms"
        ax.axvline(report.floor_p50_ms, color="grey", linewidth=0.8, linestyle=":", label=label)
    ax.legend(fontsize=7, loc="lower right")
