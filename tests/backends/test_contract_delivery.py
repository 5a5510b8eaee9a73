"""Contract: what a consumer receives is exactly what producers published, in seq order."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.support import Case, collect, outline, seqs
from runstream.core.errors import InvalidEvent, InvalidJobId
from runstream.core.events import Event

AWKWARD_TEXTS = [
    "안녕하세요",
    "👍🏽✅你好",
    "\n\n",
    "a\n\ndata: x",
    "b\rid: 999\r\r",
    "c\u2028d",
    "e\u0085f",
    ("한국어 text\n" * 100_000)[:1_000_000],
]

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
# Hypothesis reseeds `random` per example, so example job ids come from a counter.
_JOB_NUMBERS = itertools.count()


async def test_awkward_text_round_trips_exactly(case: Case) -> None:
    transport = case.transport()
    published = [
        Event("token", {"text": text}, trace_id=f"t{i}") for i, text in enumerate(AWKWARD_TEXTS)
    ]

    assert await transport.publish_many("texts", published) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert await transport.finish("texts", {"ok": True}, trace_id="t-done") == 9
    received = await collect(transport.read("texts"))

    assert [e.payload for e in received[:-1]] == [{"text": text} for text in AWKWARD_TEXTS]
    assert [e.trace_id for e in received] == [*(f"t{i}" for i in range(8)), "t-done"]
    assert [e.ts for e in received[:-1]] == [e.ts for e in published]
    assert outline(received) == [*(("token", s) for s in range(1, 9)), ("done", 9)]
    assert received[-1].payload == {"ok": True}


# The `case` fixture is function-scoped; sharing it between examples is safe because every
# example publishes to a job id of its own.
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=st.dictionaries(st.text(), JSON_VALUES, max_size=5))
async def test_any_json_payload_round_trips(case: Case, payload: dict[str, object]) -> None:
    transport = case.transport()
    job_id = f"json-{next(_JOB_NUMBERS)}"

    seq = await transport.publish(job_id, Event("custom", payload))
    await transport.finish(job_id)
    received = await collect(transport.read(job_id))

    assert outline(received) == [("custom", seq), ("done", seq + 1)]
    assert received[0].payload == payload


async def test_stored_bytes_are_compact_utf8_json(case: Case) -> None:
    transport = case.transport()
    event = Event("token", {"text": "안녕하세요", "n": [1, 2]}, trace_id="t1", ts=1733312000.5)

    await transport.publish("enc", event)
    raw = await case.raw_entries("enc")

    expected = (
        '{"seq":1,"type":"token","payload":{"text":"안녕하세요","n":[1,2]},'
        '"trace_id":"t1","ts":1733312000.5}'
    )
    assert raw == [expected.encode()]
    assert "안녕하세요".encode() in raw[0]
    assert b"\\u" not in raw[0]


async def test_ten_thousand_events_arrive_once_in_order(case: Case) -> None:
    transport = case.transport()
    events = [Event("token", {"i": i}) for i in range(10_000)]

    for start in range(0, 5_000, 250):
        await transport.publish_many("big", events[start : start + 250])
    # One call larger than a script takes: the transport splits it and seq stays contiguous.
    assert await transport.publish_many("big", events[5_000:]) == list(range(5_001, 10_001))
    await transport.finish("big")
    received = await collect(transport.read("big"))

    assert seqs(received) == list(range(1, 10_002))
    assert [e.payload for e in received[:-1]] == [{"i": i} for i in range(10_000)]
    assert received[-1].type == "done"


async def test_two_producers_of_one_job_never_share_a_seq(case: Case) -> None:
    transport = case.transport()
    rng = random.Random(7)

    async def produce(name: str) -> list[int]:
        given_seqs: list[int] = []
        sent = 0
        while sent < 2_000:
            size = min(rng.randint(1, 50), 2_000 - sent)
            batch = [Event("token", {"by": name, "i": sent + k}) for k in range(size)]
            given_seqs += await transport.publish_many("two", batch)
            sent += size
            await asyncio.sleep(0)
        return given_seqs

    first, second = await asyncio.gather(produce("a"), produce("b"))
    await transport.finish("two")
    received = await collect(transport.read("two"))

    assert sorted(first + second) == list(range(1, 4_001))
    assert seqs(received) == list(range(1, 4_002))
    for name, given_seqs in (("a", first), ("b", second)):
        mine = [e for e in received if e.payload.get("by") == name]
        assert seqs(mine) == given_seqs
        assert [e.payload["i"] for e in mine] == list(range(2_000))


async def test_late_consumer_reads_a_finished_job(case: Case) -> None:
    transport = case.transport(idle_timeout=0.3)
    await transport.publish_many("late", [Event("token", {"i": i}) for i in range(5)])
    await transport.finish("late", {"answer": 42})

    first = await collect(transport.read("late"))
    second = await collect(transport.read("late"))

    assert outline(first) == [*(("token", s) for s in range(1, 6)), ("done", 6)]
    if case.replays:
        # list-reliable keeps a log and streams keep the stream: a second read replays it.
        assert outline(second) == outline(first)
        assert second[-1].payload == {"answer": 42}
    else:
        # list-poll and list-blocking removed the events as they read them.
        assert outline(second) == [("error", 0)]
        assert second[0].payload == {"reason": "timeout", "after_seq": 0, "idle_seconds": 0.3}


async def test_read_after_a_seq_starts_past_it(case: Case) -> None:
    transport = case.transport()
    await transport.publish_many("after", [Event("token", {"i": i}) for i in range(8)])
    await transport.finish("after")

    received = await collect(transport.read("after", after=5))

    # Poll and blocking modes pop and drop seq 1..5 (they cannot seek); the rest is exact.
    assert outline(received) == [("token", 6), ("token", 7), ("token", 8), ("done", 9)]


async def test_last_seq_counts_what_was_given_out(case: Case) -> None:
    transport = case.transport()

    assert await transport.last_seq("count") is None
    assert await transport.publish("count", Event("token", {})) == 1
    assert await transport.publish_many("count", [Event("token", {})] * 3) == [2, 3, 4]
    assert await transport.publish_many("count", []) == []
    assert await transport.last_seq("count") == 4


@pytest.mark.parametrize("job_id", ["a}{b", "*", "", "x" * 10_000])
async def test_bad_job_ids_are_refused_before_redis(case: Case, job_id: str) -> None:
    transport = case.transport()

    with pytest.raises(InvalidJobId):
        await transport.publish(job_id, Event("token", {}))
    with pytest.raises(InvalidJobId):
        await transport.finish(job_id)
    with pytest.raises(InvalidJobId):
        await collect(transport.read(job_id))
    with pytest.raises(InvalidJobId):
        await transport.last_seq(job_id)
    assert await case.redis.dbsize() == 0


async def test_unserialisable_payload_is_refused_and_nothing_is_stored(case: Case) -> None:
    transport = case.transport()

    with pytest.raises(InvalidEvent, match=r"^payload: not serialisable as JSON"):
        await transport.publish("nan", Event("token", {"x": float("nan")}))
    with pytest.raises(InvalidEvent, match=r"^payload: not serialisable as JSON"):
        await transport.publish_many("nan", [Event("token", {}), Event("token", {"x": {1, 2}})])
    assert await case.redis.dbsize() == 0
