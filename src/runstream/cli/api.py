"""`runstream api`: serve the HTTP API with uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import Any

logger = logging.getLogger(__name__)

STARTUP_PING_TIMEOUT = 2.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "api", help="serve the HTTP API (POST /jobs, GET /stream/{job_id} as SSE)"
    )
    parser.add_argument("--host", help="address to bind (default: RUNSTREAM_API_HOST)")
    parser.add_argument("--port", type=int, help="port to bind (default: RUNSTREAM_API_PORT)")
    add_backend_options(parser)
    parser.set_defaults(run=run)


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """`--backend` and `--list-mode`, overriding RUNSTREAM_BACKEND and RUNSTREAM_LIST_MODE."""
    parser.add_argument("--backend", choices=["list", "streams"], help="RUNSTREAM_BACKEND")
    parser.add_argument(
        "--list-mode", choices=["poll", "blocking", "reliable"], help="RUNSTREAM_LIST_MODE"
    )


def settings_overrides(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """The options the user gave, as `load_settings` overrides.

    `fields` maps an option's name to its setting's name where the two differ.
    """
    names = {"backend": "backend", "list_mode": "list_mode", **fields}
    given = {setting: getattr(args, option, None) for option, setting in names.items()}
    return {setting: value for setting, value in given.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from runstream.api import create_app
    from runstream.core.redis_client import masked_url
    from runstream.core.settings import load_settings

    settings = load_settings(**settings_overrides(args, host="api_host", port="api_port"))
    logger.info(
        "api: backend %s, list mode %s, Redis %s, listening on http://%s:%d",
        settings.backend,
        settings.list_mode if settings.backend == "list" else "-",
        masked_url(settings.redis_url),
        settings.api_host,
        settings.api_port,
    )
    if settings.dual_write:
        logger.info(
            "api: dual-write on: reading %s, or wherever a job's newest events are",
            settings.backend,
        )
    _check_redis(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    uvicorn.Server(config).run()
    return 0


def _check_redis(settings: Any) -> None:
    """Exit with a clear message if Redis refuses us (wrong password, no such database).

    A Redis that does not answer yet is only logged: the API starts, answers 503 while
    Redis is away, and recovers when it comes back.
    """
    import redis
    from redis.exceptions import RedisError

    from runstream.core.errors import ConfigError
    from runstream.core.redis_client import redis_refusal

    client = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=STARTUP_PING_TIMEOUT,
        socket_timeout=STARTUP_PING_TIMEOUT,
    )  # fmt: skip
    try:
        client.ping()
    except RedisError as err:
        problem = redis_refusal(settings.redis_url, err)
        if isinstance(problem, ConfigError):
            raise problem from err
        logger.warning("api: %s; starting anyway (503 until Redis answers)", problem)
    finally:
        client.close()
