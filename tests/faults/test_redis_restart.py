"""Redis restarted mid-stream (a server of the test's own): real worker and API processes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from e2e.support import submit
from faults.conftest import MakeProcs
from faults.support import RedisServer, read_sse, token_text
from runstream.core.events import Event
from runstream.worker.demo_graph import demo_answer

PROMPT = "restart redis"


def wait_for(events: list[Event], count: int) -> None:
    deadline = time.monotonic() + 20
    while len(events) < count:
        assert time.monotonic() < deadline, f"only {len(events)} events arrived"
        time.sleep(0.01)


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_restart_keeping_data_loses_and_doubles_nothing(
    make_procs: MakeProcs, redis_server: RedisServer, backend: str
) -> None:
    procs = make_procs(backend, url=redis_server.url, RUNSTREAM_DEMO_TOKEN_RATE="60")
    worker = procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    events: list[Event] = []

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_sse, api, job_id, into=events)
        wait_for(events, 15)
        redis_server.restart(keep_data=True)
        reading.result(timeout=40)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert token_text(events) == demo_answer(PROMPT)
    assert [e.type for e in events].count("error") == 0
    assert events[-1].type == "done"
    assert "lost Redis" in api.output()  # the reader did reconnect
    assert f"job {job_id}: publish after seq" in worker.output()  # the producer did retry
    assert "Traceback" not in worker.output()


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_restart_losing_data_ends_the_stream_with_job_data_lost(
    make_procs: MakeProcs, redis_server: RedisServer, backend: str
) -> None:
    procs = make_procs(backend, url=redis_server.url, RUNSTREAM_DEMO_TOKEN_RATE="60")
    worker = procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    events: list[Event] = []

    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_sse, api, job_id, into=events)
        wait_for(events, 15)
        redis_server.restart(keep_data=False)
        reading.result(timeout=40)

    delivered = events[:-1]
    assert [e.seq for e in delivered] == list(range(1, len(delivered) + 1))
    assert demo_answer(PROMPT).startswith(token_text(delivered))
    error = events[-1]
    assert (error.type, error.seq) == ("error", 0)
    assert dict(error.payload) == {
        "reason": "job_data_lost",
        "message": "Redis no longer has this job's events (restarted without them, or expired)",
        "after_seq": len(delivered),
    }
    deadline = time.monotonic() + 20
    stopped = f"stops it: job {job_id!r}: Redis no longer has its events"
    while stopped not in worker.output():
        assert time.monotonic() < deadline, worker.output()
        time.sleep(0.1)
    assert "Traceback" not in worker.output()
