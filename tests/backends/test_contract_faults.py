"""Contract: holes, malformed entries, idle jobs, TTL and the length cap."""

from __future__ import annotations

import pytest

from backends.support import REPLAY_MODES, Case, cases, collect, delete_stored, outline, tokens
from runstream.core.events import Event

TTL = 60


async def write_garbage(case: Case, job_id: str, raw: bytes) -> None:
    """Store `raw` where the next event would go, taking its seq, as a broken producer would."""
    keys = case.keys(job_id)
    seq = await case.redis.incr(keys.seq)
    if case.mode == "streams":
        await case.redis.xadd(keys.stream, {"e": raw}, id=f"0-{seq}")
    else:
        await case.redis.rpush(keys.list, raw)


async def test_hole_in_seq_becomes_one_gap_event(case: Case) -> None:
    transport = case.transport()
    await transport.publish_many("hole", tokens(6))
    await delete_stored(case, "hole", {3, 4})
    await transport.finish("hole")

    received = await collect(transport.read("hole"))

    assert outline(received) == [
        ("token", 1), ("token", 2), ("gap", 0), ("token", 5), ("token", 6), ("done", 7)
    ]  # fmt: skip
    assert received[2].payload == {"first": 3, "last": 4, "count": 2}


@pytest.mark.parametrize("read_count", [2, 500])
async def test_malformed_entry_gives_error_and_read_goes_on(case: Case, read_count: int) -> None:
    transport = case.transport(read_count=read_count)
    await transport.publish_many("bad", tokens(3))
    await write_garbage(case, "bad", b"not json")
    await transport.publish_many("bad", tokens(2, first=3))
    await transport.finish("bad")

    received = await collect(transport.read("bad"))

    assert outline(received) == [
        ("token", 1), ("token", 2), ("token", 3),
        ("error", 0), ("gap", 0), ("token", 5), ("token", 6), ("done", 7),
    ]  # fmt: skip
    position = {
        "streams": "0-4",
        "list-reliable": "rs:{bad}:log[3]",
    }.get(case.mode, "rs:{bad}:list")
    assert received[3].payload == {
        "reason": "bad_event",
        "position": position,
        "after_seq": 3,
        "detail": "not a JSON event (Expecting value: line 1 column 1 (char 0))",
    }
    assert received[4].payload == {"first": 4, "last": 4, "count": 1}


async def test_idle_job_ends_with_timeout_error(case: Case) -> None:
    transport = case.transport(idle_timeout=0.4)
    await transport.publish_many("idle", tokens(2))

    received = await collect(transport.read("idle"))

    assert outline(received) == [("token", 1), ("token", 2), ("error", 0)]
    assert received[-1].payload == {"reason": "timeout", "after_seq": 2, "idle_seconds": 0.4}


async def assert_ttls(case: Case, job_id: str, expected_keys: set[str]) -> None:
    keys = case.keys(job_id)
    existing = {key for key in keys.all if await case.redis.exists(key)}
    assert existing == expected_keys
    for key in existing:
        assert 0 < await case.redis.ttl(key) <= TTL, key


async def test_finish_gives_every_key_of_the_job_a_ttl(case: Case) -> None:
    transport = case.transport(ttl_after_done=TTL)
    keys = case.keys("ttl")
    data = keys.stream if case.mode == "streams" else keys.list
    log = {keys.log} if case.mode == "list-reliable" else set()
    await transport.publish_many("ttl", tokens(5))
    await case.redis.set(keys.meta, "written by the API")
    assert await case.redis.ttl(keys.seq) == -1

    # Read part of the job before `finish` (list-reliable creates its log while reading).
    assert len(await collect(transport.read("ttl"), limit=2)) == 2
    await transport.finish("ttl")
    await assert_ttls(case, "ttl", {keys.seq, keys.meta, data, *log})

    await collect(transport.read("ttl"))
    kept = {data} if case.mode == "streams" else set()
    await assert_ttls(case, "ttl", {keys.seq, keys.meta, *kept, *log})

    # A retried producer publishing after `finish` must not create a key that never expires.
    await transport.publish("ttl", Event("token", {"late": True}))
    await assert_ttls(case, "ttl", {keys.seq, keys.meta, data, *log})


async def test_length_cap_holds_and_a_late_reader_sees_the_gap(case: Case) -> None:
    transport = case.transport(max_len=10)
    keys = case.keys("cap")
    for first in range(0, 500, 50):
        await transport.publish_many("cap", tokens(50, first))

    kept = [Event.from_json(raw).seq for raw in await case.raw_entries("cap")]
    if case.mode == "streams":
        # XADD MAXLEN ~ drops whole radix-tree nodes only, so up to a node's worth of
        # entries (stream-node-max-entries, 100 by default) stays above the cap.
        node = await stream_node_max_entries(case)
        assert 10 <= len(kept) < 10 + node
        assert kept == list(range(501 - len(kept), 501))
    else:
        assert kept == list(range(491, 501))  # LTRIM: exact

    await transport.finish("cap")
    first_kept = Event.from_json((await case.raw_entries("cap"))[0]).seq
    received = await collect(transport.read("cap"))

    assert outline(received) == [
        ("gap", 0),
        *(("token", s) for s in range(first_kept, 501)),
        ("done", 501),
    ]
    assert received[0].payload == {"first": 1, "last": first_kept - 1, "count": first_kept - 1}
    if case.mode == "list-reliable":
        assert await case.redis.llen(keys.log) == 10
        assert outline(await collect(transport.read("cap"))) == outline(received)


async def stream_node_max_entries(case: Case) -> int:
    if case.server == "fake":
        return 100  # fakeredis has no such setting; Redis's default
    reply = await case.redis.config_get("stream-node-max-entries")
    return int(reply["stream-node-max-entries"])


@pytest.mark.parametrize("spec", cases(REPLAY_MODES), indirect=True)
async def test_reader_behind_the_kept_history_resumes_with_a_gap(case: Case) -> None:
    transport = case.transport(max_len=10)
    await transport.publish_many("behind", tokens(5))
    assert len(await collect(transport.read("behind"), limit=3)) == 3
    await transport.publish_many("behind", tokens(495, first=5))
    await transport.finish("behind")

    received = await collect(transport.read("behind", after=3))

    first_kept = received[1].seq
    assert received[0].type == "gap"
    assert received[0].payload == {"first": 4, "last": first_kept - 1, "count": first_kept - 4}
    assert outline(received[1:]) == [*(("token", s) for s in range(first_kept, 501)), ("done", 501)]
    if case.mode == "list-reliable":
        # The list kept the newest 10 (LTRIM) and the log keeps the newest 10 it was given.
        assert first_kept == 492
    else:
        assert 501 - first_kept + 1 >= 10
