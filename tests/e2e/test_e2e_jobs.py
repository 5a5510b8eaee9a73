"""A job end to end over real processes: worker, uvicorn API, Redis, HTTP client."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import redis

from e2e.raising_graph import MESSAGE
from e2e.support import Procs, free_port, read_events, submit, token_text
from runstream.worker.demo_graph import demo_answer

PROMPT = "Redis Streams와 리스트의 차이를 알려줘"
MakeProcs = Callable[..., Procs]


@pytest.mark.parametrize("backend", ["streams", "list-reliable", "list-poll"])
def test_job_streams_the_demo_answer(make_procs: MakeProcs, backend: str) -> None:
    procs = make_procs(backend)
    procs.worker()
    api = procs.api()

    job_id = submit(api, PROMPT, trace_id="trace-e2e")
    events = read_events(api, job_id)

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert token_text(events) == demo_answer(PROMPT)
    assert {e.trace_id for e in events} == {"trace-e2e"}
    assert events[-1].type == "done"
    assert [e.type for e in events].count("error") == 0
    status = httpx.get(f"{api.base_url}/jobs/{job_id}").json()
    assert (status["status"], status["tokens"]) == ("done", sum(e.type == "token" for e in events))


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_api_killed_mid_stream_new_api_serves_the_tail(
    make_procs: MakeProcs, backend: str, redis_url: str
) -> None:
    procs = make_procs(backend, RUNSTREAM_DEMO_TOKEN_RATE="40")
    procs.worker()
    first_api = procs.api()
    job_id = submit(first_api, PROMPT)

    head = read_events(first_api, job_id, stop_after=15)
    first_api.kill()
    _wait_for_done_in_redis(redis_url, job_id)
    second_api = procs.api()
    tail = read_events(second_api, job_id, after=head[-1].seq)
    replay = read_events(second_api, job_id)

    assert [e.seq for e in head] == list(range(1, 16))
    assert [e.seq for e in tail] == list(range(16, len(replay) + 1))
    assert tail == replay[15:]
    assert head == replay[:15]
    assert tail[-1].type == "done"
    assert token_text(head + tail) == demo_answer(PROMPT)


def _wait_for_done_in_redis(redis_url: str, job_id: str) -> None:
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while client.hget(f"rs:{{{job_id}}}:meta", "status") != b"done":
        assert time.monotonic() < deadline, "the job did not finish after the API was killed"
        time.sleep(0.1)


@pytest.mark.parametrize("backend", ["streams", "list-reliable"])
def test_worker_killed_mid_job_ends_with_producer_lost(make_procs: MakeProcs, backend: str) -> None:
    procs = make_procs(backend, RUNSTREAM_DEMO_TOKEN_RATE="20", RUNSTREAM_LEASE_SECONDS="1")
    first_worker = procs.worker()
    api = procs.api()
    job_id = submit(api, PROMPT)

    head = read_events(api, job_id, stop_after=6)
    procs.worker()
    first_worker.kill()
    tail = read_events(api, job_id, after=head[-1].seq)

    events = head + tail
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events[-2:]] == ["error", "done"]
    error = events[-2].payload
    assert (error["reason"], error["after_seq"]) == ("producer_lost", len(events) - 2)
    assert demo_answer(PROMPT).startswith(token_text(events))
    status = httpx.get(f"{api.base_url}/jobs/{job_id}").json()
    assert status["status"] == "failed"


def test_graph_that_raises_gives_error_then_done(make_procs: MakeProcs) -> None:
    procs = make_procs()
    procs.worker("--graph", "raising_graph:graph")
    api = procs.api()

    job_id = submit(api, "anything")
    events = read_events(api, job_id)

    assert [e.type for e in events] == ["custom", "update", "error", "done"]
    assert [e.seq for e in events] == [1, 2, 3, 4]
    assert dict(events[2].payload) == {"type": "ValueError", "message": MESSAGE}
    status = httpx.get(f"{api.base_url}/jobs/{job_id}").json()
    assert status["status"] == "failed"


def test_bad_input_over_http(make_procs: MakeProcs) -> None:
    procs = make_procs(RUNSTREAM_MAX_BODY_BYTES="1024")
    api = procs.api()

    with httpx.Client(base_url=api.base_url, timeout=5) as client:
        invalid = client.post(
            "/jobs", content=b"{not json", headers={"content-type": "application/json"}
        )
        missing = client.post("/jobs", json={"trace_id": "t"})
        form = client.post("/jobs", data={"prompt": "p"})
        oversize = client.post("/jobs", json={"prompt": "x" * 2000})
        chunked = client.post("/jobs", content=iter([b'{"prompt": "', b"y" * 2000, b'"}']))
        unknown_stream = client.get("/stream/no-such-job")
        unknown_status = client.get("/jobs/no-such-job")
        bad_id = client.get("/stream/bad!id")
        job_id = client.post("/jobs", json={"prompt": "p"}).json()["job_id"]
        bad_resume = client.get(f"/stream/{job_id}", headers={"Last-Event-ID": "abc"})

    assert (invalid.status_code, invalid.json()["detail"][0]["loc"]) == (422, ["body"])
    assert (missing.status_code, missing.json()["message"]) == (
        422,
        "body: Value error, give a prompt or a graph input (or both)",
    )
    assert (form.status_code, form.json()) == (
        415,
        {
            "detail": "Content-Type must be application/json, "
            "got 'application/x-www-form-urlencoded'"
        },
    )
    assert (oversize.status_code, chunked.status_code) == (413, 413)
    assert "transfer-encoding" in chunked.request.headers
    assert (unknown_stream.status_code, unknown_status.status_code) == (404, 404)
    assert unknown_stream.json() == {
        "detail": "job 'no-such-job' not found (never submitted, or expired)"
    }
    assert (bad_id.status_code, bad_id.json()["detail"][0]["loc"]) == (422, ["path", "job_id"])
    assert bad_resume.status_code == 400
    assert bad_resume.json() == {
        "detail": "Last-Event-ID must be a whole number >= 0 (a seq), got 'abc'"
    }


def test_api_process_logs_its_settings_with_the_password_masked(make_procs: MakeProcs) -> None:
    dead_url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    procs = make_procs("list-reliable", RUNSTREAM_REDIS_URL=dead_url)
    port = free_port()
    api = procs.start("api", "--port", str(port), "--list-mode", "blocking")

    health = _first_answer(f"http://127.0.0.1:{port}/healthz")

    assert (health.status_code, health.json()["backend"]) == (503, "list-blocking")
    log = api.output()
    masked = dead_url.replace("hunter2", "***")
    assert f"api: backend list, list mode blocking, Redis {masked}, listening on" in log
    assert "hunter2" not in log + health.text


def _first_answer(url: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the API did not answer"
            time.sleep(0.05)
