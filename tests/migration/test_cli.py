"""`runstream migrate` as a process: JSON and table output, bad settings, SIGKILL and rerun."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from migration.support import PHASES, TEST_SETTINGS, keys
from runstream.core.events import Event
from runstream.core.settings import load_settings
from runstream.core.transport import open_transport

CHILD_MAIN = "import sys; from runstream.cli import main; sys.exit(main())"


def _env(redis_url: str, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
    return {**env, "RUNSTREAM_REDIS_URL": redis_url, **settings}


def _migrate(redis_url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD_MAIN, "migrate", *args],
        env=_env(redis_url, **settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _list_jobs(redis_url: str, jobs: int, events: int) -> None:
    """`jobs` list-only jobs of `events` events each, written by a list producer."""

    async def write() -> None:
        client = Redis.from_url(redis_url)
        await client.flushdb()
        settings = load_settings(redis_url=redis_url, **TEST_SETTINGS, **PHASES["list"])
        transport = open_transport(settings, client)
        batch = [Event("token", {"text": "x"})] * events
        for start in range(0, jobs, 40):
            await asyncio.gather(
                *(
                    transport.publish_many(f"job-{n}", batch)
                    for n in range(start, min(jobs, start + 40))
                )
            )
        await transport.aclose()
        await client.aclose()

    asyncio.run(write())


def _report(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_dry_run_reports_what_the_real_run_copies(redis_url: str) -> None:
    _list_jobs(redis_url, 200, 7)

    dry = _report(_migrate(redis_url, "--dry-run", "--json", "--batch", "30"))
    real = _report(_migrate(redis_url, "--json", "--batch", "30"))
    again = _report(_migrate(redis_url, "--json"))

    assert (dry["jobs_copied"], dry["events_copied"]) == (200, 1400)
    assert real == {**dry, "dry_run": False}
    assert (again["jobs_in_stream"], again["jobs_copied"], again["events_copied"]) == (200, 0, 0)


def test_the_table_names_each_count(redis_url: str) -> None:
    _list_jobs(redis_url, 3, 4)

    result = _migrate(redis_url, "--dry-run")

    assert result.returncode == 0, result.stderr
    lines = [" ".join(line.strip("│┃ ").split()) for line in result.stdout.splitlines()]
    assert "runstream migrate --to streams (dry run)" in lines
    for row in [
        "jobs scanned │ 3",
        "jobs with list events │ 3",
        "jobs with stream events │ 0",
        "jobs to copy │ 3",
        "events to copy │ 12",
    ]:
        assert row in lines


@pytest.mark.parametrize(
    ("args", "settings", "message"),
    [
        (
            [],
            {"RUNSTREAM_BACKEND": "kafka"},
            "runstream migrate: invalid settings:\n  RUNSTREAM_BACKEND: Input should be 'list' "
            "or 'streams'\n",
        ),
        (
            ["--prune"],
            {"RUNSTREAM_BACKEND": "streams", "RUNSTREAM_DUAL_WRITE": "true"},
            "runstream migrate: --prune deletes every job's list keys, which "
            "RUNSTREAM_DUAL_WRITE=true producers keep writing; prune only once dual-write is "
            "off everywhere (phase 4 of docs/migration.md)\n",
        ),
        (
            ["--batch", "0"],
            {},
            "runstream migrate: --batch must be at least 1, got 0\n",
        ),
    ],
    ids=["unknown-backend", "prune-while-dual-writing", "batch-zero"],
)
def test_bad_settings_exit_2_with_a_clear_message(
    redis_url: str, args: list[str], settings: dict[str, str], message: str
) -> None:
    result = _migrate(redis_url, *args, **settings)

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.endswith(message)


def test_unreachable_redis_exits_2_saying_nothing_is_half_copied() -> None:
    from e2e.support import free_port

    dead = f"redis://127.0.0.1:{free_port()}/0"

    result = _migrate(dead, "--dry-run", RUNSTREAM_SOCKET_CONNECT_TIMEOUT="0.5")

    assert (result.returncode, result.stdout) == (2, "")
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"runstream migrate: Redis at {dead} failed during the migration (")
    assert last_line.endswith("); nothing is half-copied: run the same command again")


@pytest.mark.slow
def test_killed_half_way_and_run_again_finishes_with_no_duplicate(redis_url: str) -> None:
    jobs, events = 4000, 30
    _list_jobs(redis_url, jobs, events)
    client = redis.Redis.from_url(redis_url)
    planned = _report(_migrate(redis_url, "--dry-run", "--json"))

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_MAIN, "migrate", "--batch", "10", "--json"],
        env=_env(redis_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not any(True for _ in client.scan_iter(match="rs:{*}:stream", count=1000)):
        assert child.poll() is None, "migrate finished before it could be killed"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    copied_before = sum(1 for _ in client.scan_iter(match="rs:{*}:stream", count=1000))
    rest = _report(_migrate(redis_url, "--json"))

    assert planned["events_copied"] == jobs * events
    assert 0 < copied_before < jobs
    assert rest["jobs_copied"] == jobs - copied_before
    assert rest["events_copied"] == (jobs - copied_before) * events
    for n in range(0, jobs, 37):
        k = keys(f"job-{n}")
        ids = [entry_id for entry_id, _ in client.xrange(k.stream)]
        assert ids == [f"0-{seq}".encode() for seq in range(1, events + 1)]
        assert [fields[b"e"] for _, fields in client.xrange(k.stream)] == client.lrange(
            k.list, 0, -1
        )
    client.close()
