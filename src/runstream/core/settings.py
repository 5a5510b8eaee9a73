"""Settings, read from `RUNSTREAM_*` environment variables and a `.env` file."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runstream.core.errors import ConfigError

Backend = Literal["list", "streams"]
ListMode = Literal["poll", "blocking", "reliable"]
ENV_PREFIX = "RUNSTREAM_"

# A blocking read's reply may arrive up to this long after the server-side BLOCK ends.
BLOCK_MARGIN_SECONDS = 1.0

REDIS_SCHEMES = ("redis", "rediss", "unix")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class Settings(BaseSettings):
    """All of runstream's settings. Each field `x` is read from `RUNSTREAM_X`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    backend: Backend = "streams"
    list_mode: ListMode = "reliable"
    dual_write: bool = Field(
        False, description="write every event to both the list and the stream (migration)"
    )
    key_prefix: str = Field("rs", pattern=r"^[A-Za-z0-9_.:-]{1,32}$")

    ttl_after_done: int = Field(3600, ge=1, description="seconds a finished job's keys live")
    max_len: int = Field(100_000, ge=10, description="events kept per job (streams: about)")
    read_count: int = Field(500, ge=1, le=10_000, description="events fetched per read")

    poll_interval_min: float = Field(0.001, gt=0, description="list-poll: first sleep when empty")
    poll_interval_max: float = Field(0.05, gt=0, description="list-poll: sleep ceiling")
    poll_multiplier: float = Field(2.0, ge=1.0, description="list-poll: backoff factor")

    block_ms: int = Field(2000, ge=1, description="BLOCK / blocking-pop time of one read")
    idle_timeout: float = Field(300.0, gt=0, description="end a stream idle this long")

    socket_timeout: float = Field(10.0, gt=0, description="Redis client read timeout")
    socket_connect_timeout: float = Field(5.0, gt=0)
    max_connections: int = Field(50, ge=2, description="Redis pool size per process")

    worker_concurrency: int = Field(8, ge=1, le=1000, description="jobs one worker runs at once")
    lease_seconds: float = Field(
        30.0, ge=1, description="a job whose worker is silent this long is reclaimed"
    )
    job_timeout: float = Field(3600.0, gt=0, description="a job running longer ends with error")
    graph: str = Field(
        "", description="module:attribute of a compiled graph; empty = built-in demo"
    )
    demo_token_rate: float = Field(50.0, gt=0, description="demo model tokens per second")

    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    heartbeat: float = Field(15.0, gt=0, description="seconds between SSE heartbeat comments")
    max_body_bytes: int = Field(65_536, ge=256, description="largest POST /jobs body")

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        # The URL may hold a password: messages quote only its scheme and database.
        parts = urlsplit(url)
        if parts.scheme not in REDIS_SCHEMES or not (parts.netloc or parts.path):
            schemes = ", ".join(f"{scheme}://" for scheme in REDIS_SCHEMES)
            found = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(
                f"not a Redis URL ({found}); use one of {schemes}, "
                "for example redis://127.0.0.1:6379/0"
            )
        database = parts.path.strip("/")
        if parts.scheme != "unix" and database and not database.isdigit():
            raise ValueError(f"the database must be a number, like /0, not {database[:20]!r}")
        return url

    @field_validator("api_host")
    @classmethod
    def _check_api_host(cls, host: str) -> str:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            labels = host.rstrip(".").split(".")
            numeric = all(label.isdigit() for label in labels)
            if numeric or not all(_HOST_LABEL.fullmatch(label) for label in labels):
                raise ValueError(
                    f"{host[:60]!r} is neither an IP address nor a host name; "
                    "use for example 127.0.0.1, 0.0.0.0 or localhost"
                ) from None
        return host

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        block_s = self.block_ms / 1000
        if self.socket_timeout < block_s + BLOCK_MARGIN_SECONDS:
            raise ValueError(
                f"RUNSTREAM_SOCKET_TIMEOUT ({self.socket_timeout:g} s) must exceed "
                f"RUNSTREAM_BLOCK_MS ({self.block_ms} ms) by at least "
                f"{BLOCK_MARGIN_SECONDS:g} s, or every idle blocking read times out; "
                "raise the first or lower the second"
            )
        if self.poll_interval_max < self.poll_interval_min:
            raise ValueError("RUNSTREAM_POLL_INTERVAL_MAX must be >= RUNSTREAM_POLL_INTERVAL_MIN")
        if self.dual_write and self.list_mode != "reliable":
            raise ValueError(
                f"RUNSTREAM_DUAL_WRITE needs RUNSTREAM_LIST_MODE=reliable, not {self.list_mode!r}: "
                "a list mode that pops events keeps no history to copy or resume from"
            )
        return self

    @property
    def backend_name(self) -> str:
        """`streams`, or `list-<mode>`: the name used in logs and benchmark tables."""
        return "streams" if self.backend == "streams" else f"list-{self.list_mode}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; raise `ConfigError` naming each bad setting and the fix."""
    try:
        return Settings(**overrides)
    except ValidationError as err:
        raise ConfigError(_explain(err)) from err


def _explain(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        name = ".".join(str(part) for part in problem["loc"])
        setting = f"{ENV_PREFIX}{name.upper()}" if name else "settings"
        lines.append(f"{setting}: {problem['msg'].removeprefix('Value error, ')}")
    return "invalid settings:\n  " + "\n  ".join(lines)
