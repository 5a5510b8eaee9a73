"""Contract of the modes that keep events (list-reliable, streams): fan-out and resume."""

from __future__ import annotations

import asyncio

import pytest

from backends.support import (
    REPLAY_MODES,
    Case,
    cases,
    collect,
    delete_stored,
    outline,
    seqs,
    tokens,
)

REPLAY_CASES = cases(REPLAY_MODES)


@pytest.mark.parametrize("spec", REPLAY_CASES, indirect=True)
async def test_several_consumers_each_get_every_event(case: Case) -> None:
    transport = case.transport()

    async def produce() -> None:
        for first in range(0, 300, 7):
            await transport.publish_many("fan", tokens(min(7, 300 - first), first))
            await asyncio.sleep(0.001)
        await transport.finish("fan")

    *readers, _ = await asyncio.gather(
        collect(transport.read("fan")), collect(transport.read("fan")), produce()
    )

    for received in readers:
        assert seqs(received) == list(range(1, 302))
        assert [e.payload for e in received[:-1]] == [{"i": i} for i in range(300)]


@pytest.mark.parametrize("spec", REPLAY_CASES, indirect=True)
@pytest.mark.parametrize("after", [2, 3, 5, 6, 9])
async def test_resume_after_any_seq_despite_a_hole(case: Case, after: int) -> None:
    transport = case.transport(read_count=3)
    await transport.publish_many("resume", tokens(9))
    await delete_stored(case, "resume", {4, 5})
    await transport.finish("resume")
    await collect(transport.read("resume"))  # list-reliable: the log now holds the hole

    received = await collect(transport.read("resume", after=after))

    rest = [("token", s) for s in (1, 2, 3, 6, 7, 8, 9) if s > after]
    hole = [("gap", 0)] if after < 4 else []
    expected = [*rest[: 3 - after], *hole, *rest[3 - after :]] if after < 4 else rest
    assert outline(received) == [*expected, ("done", 10)]


@pytest.mark.parametrize("spec", cases(["list-reliable"]), indirect=True)
@pytest.mark.parametrize("after", [0, 3])
async def test_malformed_entry_in_the_log_is_reported_once_per_read(case: Case, after: int) -> None:
    transport = case.transport(read_count=1)
    await transport.publish_many("log", tokens(3))
    await collect(transport.read("log"), limit=3)
    await case.redis.rpush(case.keys("log").log, b"{broken")
    await transport.publish_many("log", tokens(2, first=3))
    await transport.finish("log")

    received = await collect(transport.read("log", after=after))

    before = [("token", s) for s in range(after + 1, 4)]
    assert outline(received) == [*before, ("error", 0), ("token", 4), ("token", 5), ("done", 6)]
    assert received[len(before)].payload["position"] == "rs:{log}:log[3]"
