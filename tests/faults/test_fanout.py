"""Fan-out over real processes: every reader of a job gets all of it, or a clear 409."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e.support import submit
from faults.conftest import MakeProcs
from faults.support import detail, read_sse, token_text
from runstream.worker.demo_graph import demo_answer

PROMPT = "fan out"


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_three_concurrent_readers_each_get_every_event(make_procs: MakeProcs, backend: str) -> None:
    procs = make_procs(backend, RUNSTREAM_DEMO_TOKEN_RATE="200")
    procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)

    with ThreadPoolExecutor(3) as pool:
        readers = list(pool.map(lambda _: read_sse(api, job_id), range(3)))

    first = readers[0]
    assert [e.seq for e in first] == list(range(1, len(first) + 1))
    assert first[-1].type == "done"
    assert token_text(first) == demo_answer(PROMPT)
    assert readers[1] == first
    assert readers[2] == first


@pytest.mark.parametrize("backend", ["list-blocking", "list-poll"])
def test_second_reader_of_a_popping_mode_gets_409(make_procs: MakeProcs, backend: str) -> None:
    procs = make_procs(backend, RUNSTREAM_DEMO_TOKEN_RATE="50")
    procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)

    with httpx.Client(base_url=api.base_url, timeout=httpx.Timeout(5, read=30)) as client:
        with client.stream("GET", f"/stream/{job_id}") as first:
            lines = first.iter_lines()
            assert next(lines) == "id: 1"
            second = client.get(f"/stream/{job_id}")
            rest = [line for line in lines if line.startswith("event: ")]
        after_first = client.get(f"/stream/{job_id}")

    assert (first.status_code, second.status_code) == (200, 409)
    assert detail(second) == (
        f"job {job_id!r} already has a reader, and backend {backend} removes events as it "
        "reads them, so a second reader would split them; set RUNSTREAM_LIST_MODE=reliable "
        "or RUNSTREAM_BACKEND=streams to let several clients read one job"
    )
    assert rest[-1] == "event: done"
    # The first reader's claim ended with its stream; the job's events are all consumed.
    assert after_first.status_code == 410
    assert detail(after_first) == (
        f"job {job_id!r} has finished and backend {backend} removed its events as they were "
        "read, so nothing is left to stream; RUNSTREAM_LIST_MODE=reliable or "
        "RUNSTREAM_BACKEND=streams keep them"
    )
