"""`runstream bench`: every backend's latency and cost side by side, against the Redis floor."""

from __future__ import annotations

import argparse
from pathlib import Path

WORKLOAD_NAMES = "transport,e2e,throughput,concurrency"
BACKEND_NAMES = "list-poll,list-blocking,list-reliable,streams"
WIDE = 180  # the tables' width when the output is a file or a pipe


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark every backend against the Redis floor",
        description=(
            "Measure latency, throughput and cost of each backend, plus a raw-Redis floor "
            "and naive polling, in one run on one Redis. Exits 1 if any event is lost, "
            "duplicated or out of order."
        ),
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--duration", type=float, default=3.0, help="seconds per run (default 3)")
    size.add_argument("--events", type=int, help="events per job of a paced run, instead")
    parser.add_argument(
        "--rate", type=float, default=50.0, help="events/s per job when paced (default 50)"
    )
    parser.add_argument(
        "--jobs", type=int, default=100, help="concurrent jobs, concurrency (default 100)"
    )
    parser.add_argument("--payload-bytes", type=int, default=32, help="token text size")
    parser.add_argument(
        "--batch", type=int, default=500, help="events per publish_many, throughput"
    )
    parser.add_argument("--backends", default=BACKEND_NAMES, help=f"default {BACKEND_NAMES}")
    parser.add_argument("--workloads", default=WORKLOAD_NAMES, help=f"default {WORKLOAD_NAMES}")
    parser.add_argument("--redis-url", help="default: the RUNSTREAM_REDIS_URL setting")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, every backend (under a minute)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write raw results here")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="write latency CDFs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from redis.exceptions import RedisError
    from rich.console import Console

    from runstream.bench.params import BenchParams
    from runstream.bench.plot import plot_cdfs, require_matplotlib
    from runstream.bench.progress import Tracker
    from runstream.bench.report import render, write_json
    from runstream.bench.runner import Runner
    from runstream.core.errors import TransportUnavailable
    from runstream.core.redis_client import masked_url
    from runstream.core.settings import load_settings

    if args.plot is not None:
        require_matplotlib()
    # httpx logs every request at INFO: thousands of lines end to end.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    redis_url = args.redis_url or load_settings().redis_url
    params = BenchParams(
        redis_url=redis_url,
        backends=_names(args.backends),
        workloads=_names(args.workloads),
        duration=args.duration,
        events=args.events,
        rate=args.rate,
        jobs=args.jobs,
        payload_bytes=args.payload_bytes,
        batch=args.batch,
    )
    if args.smoke:
        params = params.smoke_sized()

    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDE)
    with Tracker(console) as tracker:
        try:
            report = asyncio.run(Runner(params, tracker).run())
        except RedisError as err:
            raise TransportUnavailable(
                f"Redis at {masked_url(redis_url)} failed during the benchmark: {err}"
            ) from err
    render(report, console)
    if args.json is not None:
        write_json(report, args.json)
        console.print(f"raw results: {args.json}")
    if args.plot is not None:
        plot_cdfs(report, args.plot)
        console.print(f"latency CDFs: {args.plot}")
    return 0 if report.ok else 1


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())
