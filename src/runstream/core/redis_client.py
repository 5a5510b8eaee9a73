"""One way to open a Redis client from settings, shared by every part of runstream."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runstream.core.errors import ConfigError, RunstreamError, TransportUnavailable
from runstream.core.settings import Settings


def connect_redis(settings: Settings) -> Redis:
    """An asyncio Redis client (hiredis parser when installed) for `settings.redis_url`.

    The socket timeout always exceeds the blocking-read time (the settings check it), so
    an idle `XREAD BLOCK` or `BLMPOP` ends on the server's timer, never on the client's.
    """
    client: Redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_connect_timeout,
        max_connections=settings.max_connections,
        health_check_interval=30,
    )
    return client


def masked_url(url: str) -> str:
    """`url` with its password replaced by `***`, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def redis_refusal(url: str, err: RedisError) -> RunstreamError:
    """What to tell the user when Redis at `url` fails a process's first command.

    Unreachable: `TransportUnavailable`. Reachable but refusing us (a wrong password, a
    database index the server does not have): `ConfigError`, since retrying cannot help.
    Both name RUNSTREAM_REDIS_URL and show the URL with its password masked.
    """
    where = masked_url(url)
    if isinstance(err, AuthenticationError):
        return ConfigError(f"RUNSTREAM_REDIS_URL: Redis at {where} refused the login ({err})")
    if isinstance(err, RedisConnectionError | RedisTimeoutError):
        return TransportUnavailable(
            f"cannot reach Redis at {where} ({err}); check RUNSTREAM_REDIS_URL"
        )
    hint = "; pick a database the server has (0-15 by default)" if "DB index" in str(err) else ""
    return ConfigError(f"RUNSTREAM_REDIS_URL: Redis at {where} refused us: {err}{hint}")
