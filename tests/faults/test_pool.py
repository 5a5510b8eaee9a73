"""More SSE clients than the API's Redis pool allows: 503 + Retry-After, never 500, and the
worker (its own pool, another process) still publishes every event."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from e2e.support import submit
from faults.conftest import MakeProcs
from faults.support import detail, read_sse, token_text
from runstream.core.events import Event
from runstream.worker.demo_graph import demo_answer

PROMPT = "many readers"
EXTRA_READERS = 6


def test_readers_over_the_pool_get_503_and_the_job_still_completes(
    make_procs: MakeProcs,
) -> None:
    # A pool of 4 keeps 2 connections for control requests: 2 reader slots.
    procs = make_procs("streams", RUNSTREAM_MAX_CONNECTIONS="4", RUNSTREAM_DEMO_TOKEN_RATE="50")
    procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    streams: list[list[Event]] = [[], []]

    with ThreadPoolExecutor(2) as pool:
        readers = [pool.submit(read_sse, api, job_id, into=events) for events in streams]
        deadline = time.monotonic() + 10
        while not all(streams):
            assert time.monotonic() < deadline, "the readers got no event"
            time.sleep(0.01)
        with httpx.Client(base_url=api.base_url, timeout=5) as client:
            refused = [client.get(f"/stream/{job_id}") for _ in range(EXTRA_READERS)]
            status = client.get(f"/jobs/{job_id}")
            health = client.get("/healthz")
            other = client.post("/jobs", json={"prompt": "queued meanwhile"})
        results = [reader.result(timeout=30) for reader in readers]

    assert {r.status_code for r in refused} == {503}
    assert {r.headers["retry-after"] for r in refused} == {"1"}
    assert {detail(r) for r in refused} == {
        "every reader slot is taken (RUNSTREAM_MAX_CONNECTIONS); retry shortly"
    }
    assert (status.status_code, status.json()["status"]) == (200, "running")
    assert (health.status_code, other.status_code) == (200, 202)
    for events in results:
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert token_text(events) == demo_answer(PROMPT)
        assert events[-1].type == "done"
    assert results[0] == results[1]
