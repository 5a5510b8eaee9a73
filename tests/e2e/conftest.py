"""Fixtures for the end-to-end tests: real Redis (the test database), real processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from e2e.support import REPO, Procs

BACKENDS = {
    "streams": {"RUNSTREAM_BACKEND": "streams"},
    "list-reliable": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_LIST_MODE": "reliable"},
    "list-poll": {"RUNSTREAM_BACKEND": "list", "RUNSTREAM_LIST_MODE": "poll"},
}


@pytest.fixture
def base_env(redis_url: str) -> dict[str, str]:
    """The environment of the test's processes: the flushed test database, fast settings."""
    redis.Redis.from_url(redis_url).flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    env.update(
        RUNSTREAM_REDIS_URL=redis_url,
        RUNSTREAM_DEMO_TOKEN_RATE="400",
        RUNSTREAM_BLOCK_MS="200",
        PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "e2e"), env.get("PYTHONPATH", "")]),
    )
    return env


@pytest.fixture
def make_procs(base_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Procs]]:
    """`make_procs(backend, **env)`: a process starter; everything it started is stopped."""
    made: list[Procs] = []

    def make(backend: str = "streams", **env: str) -> Procs:
        procs = Procs({**base_env, **BACKENDS[backend], **env}, tmp_path)
        made.append(procs)
        return procs

    yield make
    for procs in made:
        procs.stop_all()
