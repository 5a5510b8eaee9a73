"""`runstream migrate`: copy in-flight and finished jobs between lists and Streams."""

from __future__ import annotations

import argparse
from typing import Any

WIDE = 120  # the table's width when the output is a file or a pipe


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "migrate",
        help="copy every job's missing events from its lists to its stream (or back)",
        description=(
            "Copy, for every job under RUNSTREAM_KEY_PREFIX, the events its target structure "
            "lacks, keeping seq, `done` and the TTL. Idempotent and resumable; see "
            "docs/migration.md for when to run it."
        ),
    )
    parser.add_argument(
        "--to",
        choices=["streams", "list"],
        default="streams",
        help="the structure to copy into (default streams; list is the way back)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count what a run would copy; write nothing"
    )
    parser.add_argument(
        "--batch", type=int, default=100, metavar="N", help="jobs per SCAN step (default 100)"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="then delete each job's other structure (phase 4; refused while dual-writing)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from rich.console import Console

    from runstream.core.settings import load_settings
    from runstream.migrate.copy import MigrationReport

    settings = load_settings()
    report: MigrationReport = asyncio.run(_migrate(settings, args))
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=WIDE)
    console.print(_table(report))
    return 0


async def _migrate(settings: Any, args: argparse.Namespace) -> Any:
    from redis.exceptions import RedisError

    from runstream.core.errors import TransportUnavailable
    from runstream.core.redis_client import connect_redis, masked_url
    from runstream.migrate.copy import Migration

    redis = connect_redis(settings)
    try:
        migration = Migration(
            redis,
            settings,
            target=args.to,
            dry_run=args.dry_run,
            batch=args.batch,
            prune=args.prune,
        )
        return await migration.run()
    except RedisError as err:
        url = masked_url(settings.redis_url)
        raise TransportUnavailable(
            f"Redis at {url} failed during the migration ({type(err).__name__}: {err}); "
            "nothing is half-copied: run the same command again"
        ) from err
    finally:
        await redis.aclose()


def _table(report: Any) -> Any:
    from rich.table import Table

    verb = "to copy" if report.dry_run else "copied"
    title = f"runstream migrate --to {report.target}" + (" (dry run)" if report.dry_run else "")
    table = Table(title=title, min_width=len(title) + 4)
    table.add_column("jobs and events")
    table.add_column("count", justify="right")
    table.add_row("jobs scanned", str(report.jobs_scanned))
    table.add_row("jobs with list events", str(report.jobs_in_list))
    table.add_row("jobs with stream events", str(report.jobs_in_stream))
    table.add_row(f"jobs {verb}", str(report.jobs_copied))
    table.add_row(f"events {verb}", str(report.events_copied))
    if report.pruned:
        deleted = "keys to delete" if report.dry_run else "keys deleted"
        table.add_row(deleted, str(report.keys_deleted))
    return table
