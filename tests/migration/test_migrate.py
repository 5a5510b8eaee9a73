"""`Migration`: copies exactly what is missing, idempotent, resumable, dry run exact, prune."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from migration.support import Transports, keys, list_side, read_n, seqs, stream_side, tokens
from runstream.core.errors import ConfigError
from runstream.migrate.copy import JobResult, Migration


async def _mixed_jobs(transports: Transports) -> None:
    """finished: 5 list events, done; read: 4 list events, 2 of them read into the log;
    dual: born under dual-write (nothing missing); behind: its stream lacks seq 4 and 5."""
    plain = transports("list")
    await tokens(plain, "finished", "abcd")
    await plain.finish("finished")
    await tokens(plain, "read", "abcd")
    await read_n(transports("list"), "read", 0, 2)
    await tokens(transports("dual-list"), "dual", "abc")
    await tokens(transports("dual-list"), "behind", "abc")
    await tokens(plain, "behind", "de")


async def test_migrate_copies_exactly_the_missing_events(
    transports: Transports, redis_client: Redis
) -> None:
    await _mixed_jobs(transports)

    dry = await transports.migrate("streams", dry_run=True)
    real = await transports.migrate("streams")
    again = await transports.migrate("streams")

    counts = {"jobs_scanned": 4, "jobs_in_list": 4, "jobs_in_stream": 2, "jobs_copied": 3}
    assert dry.to_dict() == {
        "target": "streams",
        "dry_run": True,
        "pruned": False,
        **counts,
        "events_copied": 5 + 4 + 2,
        "keys_deleted": 0,
    }
    assert real.to_dict() == {**dry.to_dict(), "dry_run": False}
    assert (again.jobs_in_stream, again.jobs_copied, again.events_copied) == (4, 0, 0)
    for job_id, last in [("finished", 5), ("read", 4), ("dual", 3), ("behind", 5)]:
        in_list = await list_side(redis_client, job_id)
        assert seqs(in_list) == list(range(1, last + 1))
        assert [raw for _, raw in await stream_side(redis_client, job_id)] == in_list
    stream_ttl = await redis_client.pttl(keys("finished").stream)
    assert 0 < stream_ttl <= await redis_client.pttl(keys("finished").seq) + 50
    assert await redis_client.ttl(keys("read").stream) == -1  # still running: no TTL yet


async def test_migrate_to_list_is_the_way_back(transports: Transports, redis_client: Redis) -> None:
    streams_only = transports("streams")
    await tokens(streams_only, "job", "abc")
    await streams_only.finish("job")

    report = await transports.migrate("list")
    list_ttl = await redis_client.ttl(keys("job").list)
    events = await read_n(transports("list"), "job", 0, 10)

    assert (report.jobs_copied, report.events_copied) == (1, 4)
    assert [(e.seq, e.type) for e in events] == [
        (1, "token"),
        (2, "token"),
        (3, "token"),
        (4, "done"),
    ]
    assert 0 < list_ttl <= 600
    assert (await transports.migrate("list")).events_copied == 0


class Killed(Exception):
    """Stands for the process dying between two jobs."""


async def test_migrate_killed_half_way_finishes_on_the_next_run(
    transports: Transports, redis_client: Redis
) -> None:
    plain = transports("list")
    for number in range(12):
        await tokens(plain, f"job-{number}", [str(i) for i in range(number + 1)])
    planned = await transports.migrate("streams", dry_run=True)
    done_first: list[JobResult] = []

    def die_after_five(result: JobResult) -> None:
        done_first.append(result)
        if len(done_first) == 5:
            raise Killed

    settings = transports.settings("streams")
    with pytest.raises(Killed):
        await Migration(redis_client, settings, batch=1).run(on_job=die_after_five)
    rest = await transports.migrate("streams")

    first_events = sum(result.copied for result in done_first)
    assert (planned.jobs_copied, planned.events_copied) == (12, sum(range(1, 13)))
    assert (rest.jobs_copied, rest.events_copied) == (7, planned.events_copied - first_events)
    for number in range(12):
        in_list = await list_side(redis_client, f"job-{number}")
        assert [raw for _, raw in await stream_side(redis_client, f"job-{number}")] == in_list


async def test_prune_deletes_the_list_side_the_stream_holds(
    transports: Transports, redis_client: Redis
) -> None:
    await _mixed_jobs(transports)

    dry = await transports.migrate("streams", prune=True, dry_run=True)
    real = await transports.migrate("streams", prune=True)

    # the log of "read" (its reader moved all four events there), the list of the other three
    assert (dry.events_copied, dry.keys_deleted) == (11, 4)
    assert (real.events_copied, real.keys_deleted) == (11, 4)
    assert await redis_client.keys("rs:{*}:l*") == []
    assert [e.seq for e in await read_n(transports("streams"), "behind", 0, 5)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("phase", "target", "message"),
    [
        (
            "dual-streams",
            "streams",
            "--prune deletes every job's list keys, which RUNSTREAM_DUAL_WRITE=true producers "
            "keep writing; prune only once dual-write is off everywhere (phase 4 of "
            "docs/migration.md)",
        ),
        (
            "list",
            "streams",
            "--prune deletes every job's list keys, but RUNSTREAM_BACKEND=list reads them; "
            "prune with RUNSTREAM_BACKEND=streams",
        ),
    ],
)
async def test_prune_is_refused_while_the_source_is_written_or_read(
    transports: Transports, redis_client: Redis, phase: str, target: str, message: str
) -> None:
    settings = transports.settings(phase)
    with pytest.raises(ConfigError) as caught:
        Migration(redis_client, settings, target=target, prune=True)  # type: ignore[arg-type]

    assert str(caught.value) == message
