"""The job queue: submit, take, ack, lease renewal and takeover of a dead worker's job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from runstream.core.errors import InvalidJobId
from runstream.core.events import Event
from runstream.core.settings import Settings
from runstream.core.transport import open_transport
from runstream.worker.queue import (
    GROUP,
    UNFINISHED_TTL_SECONDS,
    InvalidJobInput,
    JobQueue,
    QueuedJob,
)

SHORT_LEASE = 0.5


def short_lease(make_settings: Callable[..., Settings]) -> Settings:
    """Settings with a lease below RUNSTREAM_LEASE_SECONDS's minimum, to keep tests fast."""
    return make_settings().model_copy(update={"lease_seconds": SHORT_LEASE})


async def test_submit_writes_queued_status(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())

    await queue.submit("job-1", {"prompt": "hi"})
    status = await queue.status("job-1")

    assert status is not None
    assert status.status == "queued"
    assert status.job_id == "job-1"
    assert status.started_at is None
    assert status.finished_at is None
    assert status.events == 0
    assert status.error is None
    assert isinstance(status.created_at, float)
    assert set(status.to_dict()) == {
        "job_id",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "events",
        "tokens",
        "error",
    }


async def test_status_of_unknown_job_is_none(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    assert await JobQueue(any_redis, make_settings()).status("nope") is None


async def test_submit_rejects_bad_input(
    fake_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(fake_redis, make_settings())

    with pytest.raises(InvalidJobId):
        await queue.submit("bad id", {"prompt": "x"})
    with pytest.raises(InvalidJobInput, match="JSON object"):
        await queue.submit("j", ["not", "a", "mapping"])  # type: ignore[arg-type]
    with pytest.raises(InvalidJobInput, match="serialisable"):
        await queue.submit("j", {"x": object()})
    await queue.submit("j", {"prompt": "x"})
    with pytest.raises(InvalidJobInput, match="already in use"):
        await queue.submit("j", {"prompt": "y"})


async def test_take_then_ack_empties_the_queue(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await queue.submit("a", {"prompt": "첫째"})
    await queue.submit("b", {"prompt": "second"})

    jobs = await queue.take("w1", count=10, block_ms=10)

    assert [(j.job_id, j.job_input, j.reclaimed) for j in jobs] == [
        ("a", {"prompt": "첫째"}, False),
        ("b", {"prompt": "second"}, False),
    ]
    assert await queue.take("w1", count=10, block_ms=10) == []
    for job in jobs:
        await queue.ack(job)
    assert await any_redis.xlen(queue.stream) == 0
    assert (await any_redis.xpending(queue.stream, GROUP))["pending"] == 0


async def test_dead_workers_job_is_taken_over_after_the_lease(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue_1 = JobQueue(any_redis, short_lease(make_settings))
    queue_2 = JobQueue(any_redis, short_lease(make_settings))
    await queue_1.submit("orphan", {"prompt": "p"})
    [taken] = await queue_1.take("dead-worker", count=1, block_ms=10)

    assert await queue_2.take("live-worker", count=1, block_ms=10) == []
    await asyncio.sleep(SHORT_LEASE + 0.2)
    [reclaimed] = await queue_2.take("live-worker", count=1, block_ms=10)

    assert reclaimed == QueuedJob("orphan", {"prompt": "p"}, taken.entry_id, True, deliveries=2)
    [pending] = await any_redis.xpending_range(queue_2.stream, GROUP, "-", "+", 10)
    assert pending["consumer"] == b"live-worker"


async def test_renewed_lease_keeps_a_long_job_from_being_stolen(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    owner = JobQueue(any_redis, short_lease(make_settings))
    other = JobQueue(any_redis, short_lease(make_settings))
    await owner.submit("long", {"prompt": "p"})
    [job] = await owner.take("owner", count=1, block_ms=10)

    for _ in range(6):  # 6 x lease/3 = two full leases
        await asyncio.sleep(SHORT_LEASE / 3)
        assert await owner.renew("owner", [job]) == {job.entry_id}
        assert await other.take("thief", count=1, block_ms=1) == []

    assert await any_redis.get(owner.keys.job("long").lease) == b"owner"
    await owner.ack(job)
    assert await any_redis.exists(owner.keys.job("long").lease) == 0


async def test_renew_does_not_steal_back_a_lost_job(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    slow = JobQueue(any_redis, short_lease(make_settings))
    fast = JobQueue(any_redis, short_lease(make_settings))
    await slow.submit("stalled", {"prompt": "p"})
    [job] = await slow.take("slow", count=1, block_ms=10)
    await asyncio.sleep(SHORT_LEASE + 0.2)
    [_] = await fast.take("fast", count=1, block_ms=10)

    assert await slow.renew("slow", [job]) == set()
    [pending] = await any_redis.xpending_range(fast.stream, GROUP, "-", "+", 10)
    assert pending["consumer"] == b"fast"


async def test_status_follows_the_job_and_meta_expires_with_it(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(ttl_after_done=120)
    queue = JobQueue(any_redis, settings)
    transport = open_transport(settings, any_redis)
    await queue.submit("j", {"prompt": "p"})

    await queue.mark_running("j", "w1")
    await transport.publish("j", Event("token", {"text": "a"}))
    running = await queue.status("j")
    await queue.mark_finished("j", tokens=1, error="ValueError: boom")
    await transport.finish("j", {"events": 1}, error={"type": "ValueError", "message": "boom"})
    failed = await queue.status("j")

    assert running is not None
    assert (running.status, running.events, running.finished_at) == ("running", 1, None)
    assert running.started_at is not None
    assert failed is not None
    assert (failed.status, failed.events, failed.tokens, failed.error) == (
        "failed",
        3,
        1,
        "ValueError: boom",
    )
    assert failed.finished_at is not None
    assert 0 < await any_redis.ttl(queue.keys.job("j").meta) <= 120
    assert await queue.has_finished("j")


async def test_malformed_entry_is_dropped(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await queue.ensure_group()
    await any_redis.xadd(queue.stream, {"job_id": "x", "input": "not json"})
    await queue.submit("good", {"prompt": "p"})

    jobs = await queue.take("w", count=10, block_ms=10)

    assert [j.job_id for j in jobs] == ["good"]
    assert await any_redis.xlen(queue.stream) == 1


async def test_queue_survives_a_deleted_stream(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await queue.ensure_group()
    await any_redis.delete(queue.stream)

    assert await queue.take("w", count=1, block_ms=10) == []
    await queue.submit("after", {"prompt": "p"})
    assert [j.job_id for j in await queue.take("w", count=1, block_ms=10)] == ["after"]


async def test_retire_removes_only_a_consumer_without_pending_jobs(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await queue.submit("held", {"prompt": "p"})
    [job] = await queue.take("busy", count=1, block_ms=10)
    assert await queue.take("idle", count=1, block_ms=10) == []

    assert await queue.retire("idle") is True
    assert await queue.retire("busy") is False
    consumers = await any_redis.xinfo_consumers(queue.stream, GROUP)
    assert [(c["name"], c["pending"]) for c in consumers] == [(b"busy", 1)]
    await queue.ack(job)
    assert await queue.retire("busy") is True
    assert await any_redis.xinfo_consumers(queue.stream, GROUP) == []


async def test_failed_submit_leaves_no_queued_job(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await any_redis.set(queue.stream, "not a stream")

    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await queue.submit("lost", {"prompt": "p"})

    assert await queue.status("lost") is None
    assert await any_redis.exists(queue.keys.job("lost").meta) == 0


async def test_unfinished_job_meta_expires_after_a_week(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    meta = queue.keys.job("j").meta

    await queue.submit("j", {"prompt": "p"})
    queued_ttl = await any_redis.ttl(meta)
    await any_redis.expire(meta, 5)
    await queue.mark_running("j", "w1")
    running_ttl = await any_redis.ttl(meta)

    assert UNFINISHED_TTL_SECONDS == 7 * 24 * 3600
    assert UNFINISHED_TTL_SECONDS - 1 <= queued_ttl <= UNFINISHED_TTL_SECONDS
    assert UNFINISHED_TTL_SECONDS - 1 <= running_ttl <= UNFINISHED_TTL_SECONDS
    long_jobs = JobQueue(any_redis, make_settings(job_timeout=30 * 24 * 3600))
    assert long_jobs.unfinished_ttl == 31 * 24 * 3600


async def test_submit_queues_without_a_group_and_a_later_worker_takes_the_job(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    submitter = JobQueue(any_redis, make_settings())
    await submitter.submit("early", {"prompt": "p"})
    groups_before = await any_redis.xinfo_groups(submitter.stream)

    jobs = await JobQueue(any_redis, make_settings()).take("w", count=5, block_ms=10)

    assert groups_before == []
    assert [(job.job_id, job.job_input) for job in jobs] == [("early", {"prompt": "p"})]


async def test_submit_refuses_a_taken_id_without_queuing_it_twice(
    any_redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    queue = JobQueue(any_redis, make_settings())
    await queue.submit("twice", {"prompt": "a"})

    with pytest.raises(InvalidJobInput, match="job id 'twice' is already in use; submit a new id"):
        await queue.submit("twice", {"prompt": "b"})

    assert await any_redis.xlen(queue.stream) == 1


@pytest.mark.parametrize(
    ("job_input", "message"),
    [
        ({"prompt": "a\ud800"}, "job input holds a lone surrogate, which is not valid UTF-8"),
        (
            {"input": {"x": float("nan")}},
            "job input is not serialisable as JSON (Out of range float values are not JSON "
            "compliant",
        ),
    ],
)
async def test_submit_refuses_input_redis_or_json_cannot_hold(
    fake_redis: Redis,
    make_settings: Callable[..., Settings],
    job_input: dict[str, Any],
    message: str,
) -> None:
    queue = JobQueue(fake_redis, make_settings())

    with pytest.raises(InvalidJobInput) as caught:
        await queue.submit("odd", job_input)

    assert str(caught.value).startswith(message)
    assert await queue.status("odd") is None


async def test_stream_deleted_while_a_worker_waits_on_it_is_recreated(
    real_redis: Redis, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    db = redis_url.rsplit("/", 1)[1]
    queue = JobQueue(real_redis, make_settings())
    await queue.ensure_group()
    waiting = asyncio.create_task(queue.take("w", count=1, block_ms=3000))
    for _ in range(200):  # until XREADGROUP is blocked on the stream
        clients = await real_redis.client_list()
        if any(c["db"] == db and "b" in c["flags"] for c in clients):
            break
        await asyncio.sleep(0.01)

    await real_redis.delete(queue.stream)
    await JobQueue(real_redis, make_settings()).submit("after", {"prompt": "p"})

    assert [job.job_id for job in await waiting] == ["after"]
