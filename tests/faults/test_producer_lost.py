"""A worker killed mid-job with no other worker alive: its readers end the job themselves."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e.support import submit
from faults.conftest import MakeProcs
from faults.support import outline, read_sse, token_text
from runstream.backends.guards import ORPHAN_MESSAGE
from runstream.worker.demo_graph import demo_answer

PROMPT = "kill the worker"
LEASE_SECONDS = 2


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_worker_sigkill_without_another_worker_ends_with_producer_lost(
    make_procs: MakeProcs, backend: str
) -> None:
    procs = make_procs(
        backend, RUNSTREAM_DEMO_TOKEN_RATE="20", RUNSTREAM_LEASE_SECONDS=str(LEASE_SECONDS)
    )
    worker = procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    head = read_sse(api, job_id, stop_after=6)

    worker.kill()
    killed_at = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        tails = list(pool.map(lambda _: read_sse(api, job_id, after=head[-1].seq), range(2)))
    waited = time.monotonic() - killed_at

    tail = tails[0]
    assert tails[1] == tail  # two readers, one `error` + `done` between them
    events = head + tail
    last = len(events) - 2
    assert outline(events) == [(e.type, i) for i, e in enumerate(events[:last], 1)] + [
        ("error", last + 1),
        ("done", last + 2),
    ]
    assert dict(events[-2].payload) == {
        "reason": "producer_lost",
        "message": ORPHAN_MESSAGE,
        "after_seq": last,
    }
    assert dict(events[-1].payload) == {"events": last}
    assert demo_answer(PROMPT).startswith(token_text(events))
    assert waited < LEASE_SECONDS + 3  # the lease, one read, one liveness check
    status = httpx.get(f"{api.base_url}/jobs/{job_id}").json()
    assert (status["status"], status["error"]) == ("failed", f"producer_lost: {ORPHAN_MESSAGE}")


def test_a_new_worker_acks_the_job_a_reader_ended(make_procs: MakeProcs) -> None:
    procs = make_procs(RUNSTREAM_DEMO_TOKEN_RATE="20", RUNSTREAM_LEASE_SECONDS="1")
    worker = procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)
    head = read_sse(api, job_id, stop_after=4)
    worker.kill()
    tail = read_sse(api, job_id, after=head[-1].seq)

    second = procs.worker()
    deadline = time.monotonic() + 10
    while f"job {job_id} had already finished; acking it" not in second.output():
        assert time.monotonic() < deadline, second.output()
        time.sleep(0.1)
    again = read_sse(api, job_id)

    assert again == head + tail
    assert [e.type for e in again[-2:]] == ["error", "done"]
