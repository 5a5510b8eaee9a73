"""Resume over real processes: late resume after `done`, after expiry, and behind the cap."""

from __future__ import annotations

import time

import httpx
import pytest
import redis

from e2e.support import Proc, submit
from faults.conftest import MakeProcs
from faults.support import detail, outline, read_sse, token_text
from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.worker.demo_graph import demo_answer

PROMPT = "resume late"
BACKENDS = ["streams", "list-reliable"]


def finished_job(api: Proc) -> tuple[str, list[Event]]:
    job_id = submit(api, PROMPT)
    events = read_sse(api, job_id)
    assert events[-1].type == "done"
    return job_id, events


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_after_done_replays_to_done_and_closes(make_procs: MakeProcs, backend: str) -> None:
    procs = make_procs(backend)
    procs.worker()
    api = procs.api()
    job_id, events = finished_job(api)
    done = events[-1].seq

    for after in (1, done // 2, done - 1):
        assert read_sse(api, job_id, after=after) == events[after:]
    at_done = httpx.get(f"{api.base_url}/stream/{job_id}", headers={"Last-Event-ID": str(done)})
    beyond = httpx.get(f"{api.base_url}/stream/{job_id}?last_event_id={done + 1}")

    assert [e.seq for e in events] == list(range(1, done + 1))
    assert token_text(events) == demo_answer(PROMPT)
    assert (at_done.status_code, at_done.content) == (204, b"")
    assert beyond.status_code == 400
    assert detail(beyond) == f"Last-Event-ID {done + 1} is beyond the job's last event (seq {done})"


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_after_expiry_is_404_with_a_message(
    make_procs: MakeProcs, backend: str, redis_url: str
) -> None:
    procs = make_procs(backend, RUNSTREAM_TTL_AFTER_DONE="1")
    procs.worker()
    api = procs.api()
    job_id, _ = finished_job(api)
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    while client.exists(*KeySpace().job(job_id).all):
        assert time.monotonic() < deadline, "the job's keys did not expire"
        time.sleep(0.05)

    fresh = httpx.get(f"{api.base_url}/stream/{job_id}")
    resumed = httpx.get(f"{api.base_url}/stream/{job_id}", headers={"Last-Event-ID": "3"})

    message = f"job {job_id!r} not found (never submitted, or expired)"
    assert (fresh.status_code, detail(fresh)) == (404, message)
    assert (resumed.status_code, detail(resumed)) == (404, message)
    assert fresh.headers["content-type"] == "application/json"


@pytest.mark.parametrize("backend", BACKENDS)
def test_id_older_than_the_cap_gets_one_gap_then_the_rest(
    make_procs: MakeProcs, backend: str, redis_url: str
) -> None:
    procs = make_procs(backend, RUNSTREAM_MAX_LEN="10")
    procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    client = redis.Redis.from_url(redis_url)
    keys = KeySpace().job(job_id)
    deadline = time.monotonic() + 20
    while client.ttl(keys.seq) < 0:  # `finish` starts the TTL
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    done = int(client.get(keys.seq) or 0)
    if backend == "streams":
        oldest = int(client.xrange(keys.stream, count=1)[0][0].split(b"-")[1])
    else:
        oldest = Event.from_json(client.lindex(keys.list, 0) or b"").seq
        assert oldest == done - 9  # LTRIM keeps exactly the cap

    resumed = read_sse(api, job_id, after=1)
    again = read_sse(api, job_id, after=1)

    assert outline(resumed) == [("gap", 0), *((t.type, t.seq) for t in resumed[1:])]
    assert dict(resumed[0].payload) == {"first": 2, "last": oldest - 1, "count": oldest - 2}
    assert [e.seq for e in resumed[1:]] == list(range(oldest, done + 1))
    assert resumed[-1].type == "done"
    assert again[1:] == resumed[1:]
    assert again[0].payload == resumed[0].payload
