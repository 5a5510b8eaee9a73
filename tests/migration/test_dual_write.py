"""Dual-write: one seq and the same bytes in both structures; readers find each job."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from migration.support import Transports, keys, list_side, read_n, seqs, stream_side, tokens
from runstream.core.events import Event


async def test_dual_write_stores_the_same_bytes_under_one_seq(
    transports: Transports, redis_client: Redis
) -> None:
    dual = transports("dual-list")

    assert await tokens(dual, "job", ["a", "b", "c"]) == [1, 2, 3]
    assert await dual.finish("job", {"events": 3}) == 4

    in_list = await list_side(redis_client, "job")
    assert seqs(in_list) == [1, 2, 3, 4]
    assert await stream_side(redis_client, "job") == [
        (f"0-{seq}".encode(), raw) for seq, raw in zip([1, 2, 3, 4], in_list, strict=True)
    ]
    k = keys("job")
    for key in (k.seq, k.list, k.stream):
        assert 0 < await redis_client.ttl(key) <= 600


async def test_dual_write_levels_a_job_begun_on_the_list(
    transports: Transports, redis_client: Redis
) -> None:
    plain, reader = transports("list"), transports("list")
    await tokens(plain, "job", ["a", "b", "c", "d"])
    assert [e.seq for e in await read_n(reader, "job", 0, 2)] == [1, 2]  # moved 1..4 to the log

    assert await tokens(transports("dual-streams"), "job", ["e"]) == [5]

    in_list = await list_side(redis_client, "job")
    assert seqs(in_list) == [1, 2, 3, 4, 5]
    assert [raw for _, raw in await stream_side(redis_client, "job")] == in_list


async def test_dual_write_levels_a_job_begun_on_the_stream(
    transports: Transports, redis_client: Redis
) -> None:
    await tokens(transports("streams"), "job", ["a", "b", "c"])

    assert await tokens(transports("dual-streams"), "job", ["d"]) == [4]

    in_stream = await stream_side(redis_client, "job")
    assert [entry_id for entry_id, _ in in_stream] == [b"0-1", b"0-2", b"0-3", b"0-4"]
    assert await list_side(redis_client, "job") == [raw for _, raw in in_stream]


async def test_streams_reader_falls_back_to_the_list_and_moves_to_the_stream(
    transports: Transports, redis_client: Redis
) -> None:
    await tokens(transports("list"), "job", ["a", "b", "c"])
    reader = transports("dual-streams")
    head = await read_n(reader, "job", 0, 3)  # no stream yet: read from the list

    await transports.migrate("streams")
    # A producer that writes the stream only: the list never gets seq 4 and 5.
    streams_only = transports("streams")
    await tokens(streams_only, "job", ["d"])
    await streams_only.finish("job")
    tail = await read_n(reader, "job", head[-1].seq, 10)

    assert [(e.seq, e.type) for e in head + tail] == [
        (1, "token"),
        (2, "token"),
        (3, "token"),
        (4, "token"),
        (5, "done"),
    ]


async def test_list_reader_falls_back_to_the_stream(
    transports: Transports, redis_client: Redis
) -> None:
    streams_only = transports("streams")
    await tokens(streams_only, "job", ["a", "b"])
    await streams_only.finish("job")

    events = await read_n(transports("dual-list"), "job", 0, 10)

    assert [(e.seq, e.payload.get("text")) for e in events] == [(1, "a"), (2, "b"), (3, None)]
    assert await redis_client.exists(keys("job").list, keys("job").log) == 0


# Each phase's producer writes two events, then a client resumes with that phase's reader.
FORWARD = ["list", "dual-list", "dual-streams", "streams"]
BACKWARD = ["streams", "dual-streams", "dual-list", "list"]


@pytest.mark.parametrize(
    ("phases", "target"), [(FORWARD, "streams"), (BACKWARD, "list")], ids=["forward", "backward"]
)
async def test_one_job_across_every_phase_reaches_each_reader_once(
    transports: Transports, phases: list[str], target: str
) -> None:
    delivered: list[Event] = []
    for index, phase in enumerate(phases):
        producer = transports(phase)
        await tokens(producer, "job", [f"{phase}-1", f"{phase}-2"])
        if phase.startswith("dual"):
            await transports.migrate(target)  # type: ignore[arg-type]
        if index == len(phases) - 1:
            await producer.finish("job")
        after = delivered[-1].seq if delivered else 0
        delivered += await read_n(transports(phase), "job", after, 3 if index == 3 else 2)

    texts = [text for phase in phases for text in (f"{phase}-1", f"{phase}-2")]
    assert [e.seq for e in delivered] == list(range(1, 10))
    assert [e.payload.get("text") for e in delivered] == [*texts, None]
    assert delivered[-1].type == "done"


def test_dual_write_with_a_list_mode_that_pops_is_refused() -> None:
    from runstream.core.errors import ConfigError
    from runstream.core.settings import load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings(dual_write=True, list_mode="poll")

    assert str(caught.value) == (
        "invalid settings:\n  settings: RUNSTREAM_DUAL_WRITE needs RUNSTREAM_LIST_MODE=reliable, "
        "not 'poll': a list mode that pops events keeps no history to copy or resume from"
    )


async def test_a_retried_dual_write_batch_is_stored_once(
    transports: Transports, redis_client: Redis
) -> None:
    dual = transports("dual-streams")
    k = keys("job")
    script_keys = [k.seq, k.list, k.stream, k.batch, k.log, k.meta, k.reader, k.lease]
    body = Event("token", {"text": "a"}).body()
    args = ["both", 1000, 0, "batch-1", 0, body]

    first = await dual._publish_script(keys=script_keys, args=args)  # type: ignore[attr-defined]
    retry = await dual._publish_script(keys=script_keys, args=args)  # type: ignore[attr-defined]

    assert (first, retry) == (1, 1)
    assert seqs(await list_side(redis_client, "job")) == [1]
    assert [entry_id for entry_id, _ in await stream_side(redis_client, "job")] == [b"0-1"]
