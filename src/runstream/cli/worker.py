"""`runstream worker`: take jobs from the Redis job queue and run their graphs."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)

# option name -> setting name, for the options that override a setting
_OVERRIDES = {
    "backend": "backend",
    "list_mode": "list_mode",
    "graph": "graph",
    "concurrency": "worker_concurrency",
}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run LangGraph jobs from the queue and publish their events"
    )
    parser.add_argument("--backend", choices=["list", "streams"], help="RUNSTREAM_BACKEND")
    parser.add_argument(
        "--list-mode", choices=["poll", "blocking", "reliable"], help="RUNSTREAM_LIST_MODE"
    )
    parser.add_argument(
        "--graph",
        metavar="MODULE:ATTRIBUTE",
        help="a compiled graph, or a zero-argument callable returning one (RUNSTREAM_GRAPH; "
        "default: the built-in demo graph)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="jobs run at once (RUNSTREAM_WORKER_CONCURRENCY)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import sys

    from runstream.core.redis_client import masked_url
    from runstream.core.settings import load_settings
    from runstream.worker.worker import run_worker

    given = {setting: getattr(args, option, None) for option, setting in _OVERRIDES.items()}
    settings = load_settings(**{name: value for name, value in given.items() if value is not None})
    logger.info(
        "worker: backend %s, list mode %s, Redis %s, graph %s, concurrency %d",
        settings.backend,
        settings.list_mode if settings.backend == "list" else "-",
        masked_url(settings.redis_url),
        settings.graph or "built-in demo",
        settings.worker_concurrency,
    )
    if settings.dual_write:
        logger.info("worker: dual-write on: every event goes to the job's list and its stream")
    # Like `python -m`, find a --graph module in the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    asyncio.run(run_worker(settings))
    return 0
