"""100 random client disconnects and resumes during one 5,000-token job, real processes."""

from __future__ import annotations

import random
import time

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from e2e.support import Proc, submit
from faults.conftest import MakeProcs
from faults.long_graph import TOKENS, long_answer
from faults.support import token_text
from runstream.core.events import Event

DISCONNECTS = 100
READER_COMMANDS = {"xread", "blmove", "blmpop", "lpop", "evalsha"}


def read_some(client: httpx.Client, job_id: str, after: int, limit: int) -> list[Event]:
    """At most `limit` events after `after`, then drop the connection."""
    headers = {"Last-Event-ID": str(after)} if after else {}
    events: list[Event] = []
    with connect_sse(client, "GET", f"/stream/{job_id}", headers=headers) as source:
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            if sse.data:
                events.append(Event.from_json(sse.data))
            if len(events) >= limit:
                break
    return events


def read_with_disconnects(api: Proc, job_id: str, rng: random.Random) -> tuple[list[Event], int]:
    received: list[Event] = []
    disconnects = 0
    with httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(5, read=30)) as client:
        while not received or received[-1].type != "done":
            limit = rng.randint(1, 60) if disconnects < DISCONNECTS else 10**9
            after = received[-1].seq if received else 0
            got = read_some(client, job_id, after, limit)
            received.extend(got)
            disconnects += len(got) >= limit
    return received, disconnects


def our_blocked_readers(redis_url: str) -> list[str]:
    db = redis_url.rsplit("/", 1)[1]
    clients = redis.Redis.from_url(redis_url).client_list()
    return [
        c["cmd"]
        for c in clients
        if c["db"] == db and "b" in c["flags"] and c["cmd"] in READER_COMMANDS
    ]


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_random_disconnects_and_resumes_give_the_exact_text(
    make_procs: MakeProcs, backend: str, redis_url: str
) -> None:
    procs = make_procs(backend, RUNSTREAM_DEMO_TOKEN_RATE="1000", RUNSTREAM_HEARTBEAT="1")
    procs.worker("--graph", "faults.long_graph:graph")
    api = procs.api()
    job_id = submit(api, "long")

    received, disconnects = read_with_disconnects(api, job_id, random.Random(4))

    assert disconnects == DISCONNECTS
    assert [e.seq for e in received] == list(range(1, len(received) + 1))
    assert sum(e.type == "token" for e in received) == TOKENS
    assert token_text(received) == long_answer()
    assert [e.type for e in received if e.type not in ("token", "update")] == ["done"]
    deadline = time.monotonic() + 2  # one heartbeat interval, plus slack
    while our_blocked_readers(redis_url):
        assert time.monotonic() < deadline, our_blocked_readers(redis_url)
        time.sleep(0.05)
