"""GET /stream/{job_id}: SSE framing, heartbeats, resume, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from api.support import Api, MakeApi
from runstream.core.events import Event

PAYLOAD_TEXTS = ["a\n\ndata: x", "b\rid: 999\r\r", "c\u2028d", "e\u0085f", '안녕 "q" \\ \t']


async def publish_job(api: Api, job_id: str = "job-1") -> list[Event]:
    """Publish one token per tricky text, then `done`; return the stored events."""
    transport = api.services.transport
    tokens = [
        Event("token", {"text": text}, "trace-1", ts=100.0 + i)
        for i, text in enumerate(PAYLOAD_TEXTS)
    ]
    seqs = await transport.publish_many(job_id, tokens)
    done_seq = await transport.finish(job_id, {"tokens": len(tokens)}, trace_id="trace-1")
    stored = [
        Event(e.type, e.payload, e.trace_id, seq, e.ts) for e, seq in zip(tokens, seqs, strict=True)
    ]
    done = await _stored_done(api, job_id, done_seq)
    return [*stored, done]


async def _stored_done(api: Api, job_id: str, seq: int) -> Event:
    # `finish` stamps `done` with its own clock; read it back to learn its `ts`.
    async for event in api.services.transport.read(job_id, after=seq - 1):
        return event
    raise AssertionError("done not found")


def frame(event: Event) -> str:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.to_json()}\n\n"


async def test_stream_frames_each_event_exactly(api: Api) -> None:
    events = await publish_job(api)

    response = await api.client.get("/stream/job-1")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert "content-encoding" not in response.headers
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert response.text == "".join(frame(event) for event in events)


async def test_tricky_payload_texts_arrive_intact(api: Api) -> None:
    await publish_job(api)

    response = await api.client.get("/stream/job-1")

    data_lines = [line for line in response.text.split("\n") if line.startswith("data: ")]
    decoded = [Event.from_json(line.removeprefix("data: ")) for line in data_lines]
    assert [e.payload.get("text") for e in decoded[:-1]] == PAYLOAD_TEXTS
    assert [e.seq for e in decoded] == [1, 2, 3, 4, 5, 6]
    assert decoded[-1].type == "done"


@pytest.mark.parametrize("after", [0, 2, 5])
async def test_resume_from_last_event_id_header(api: Api, after: int) -> None:
    events = await publish_job(api)
    await api.client.get("/stream/job-1")  # a first full read must not hide a resumed one

    response = await api.client.get("/stream/job-1", headers={"Last-Event-ID": str(after)})

    assert response.status_code == 200
    assert response.text == "".join(frame(event) for event in events[after:])


async def test_resume_from_query_parameter(api: Api) -> None:
    events = await publish_job(api)

    response = await api.client.get("/stream/job-1", params={"last_event_id": "3"})

    assert response.text == "".join(frame(event) for event in events[3:])


async def test_header_wins_over_query_parameter(api: Api) -> None:
    events = await publish_job(api)

    response = await api.client.get("/stream/job-1?last_event_id=1", headers={"Last-Event-ID": "4"})

    assert response.text == "".join(frame(event) for event in events[4:])


async def test_resume_after_done_is_204(api: Api) -> None:
    await publish_job(api)

    response = await api.client.get("/stream/job-1", headers={"Last-Event-ID": "6"})

    assert response.status_code == 204
    assert response.content == b""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "Last-Event-ID must be a whole number >= 0 (a seq), got 'abc'"),
        ("-1", "Last-Event-ID must be a whole number >= 0 (a seq), got '-1'"),
        ("1.5", "Last-Event-ID must be a whole number >= 0 (a seq), got '1.5'"),
        ("7", "Last-Event-ID 7 is beyond the job's last event (seq 6)"),
        ("1" * 19, "Last-Event-ID is too large: a seq has at most 18 digits, got 19"),
        ("9" * 5000, "Last-Event-ID is too large: a seq has at most 18 digits, got 5000"),
        ("\u00e9".encode(), "Last-Event-ID must be a whole number >= 0 (a seq), got '\\xc3\\xa9'"),
    ],
)
async def test_malformed_last_event_id_is_400(api: Api, value: str | bytes, message: str) -> None:
    await publish_job(api)

    response = await api.client.get("/stream/job-1", headers={"Last-Event-ID": value})

    assert response.status_code == 400
    assert response.json() == {"detail": message}


async def test_last_event_id_with_leading_zeros_resumes_after_its_value(api: Api) -> None:
    events = await publish_job(api)

    response = await api.client.get("/stream/job-1", headers={"Last-Event-ID": "0" * 30 + "4"})

    assert response.status_code == 200
    assert [line for line in response.text.splitlines() if line.startswith("id:")] == [
        f"id: {event.seq}" for event in events[4:]
    ]


async def test_malformed_query_last_event_id_is_400_naming_it(api: Api) -> None:
    await publish_job(api)

    response = await api.client.get("/stream/job-1?last_event_id=x1")

    assert response.status_code == 400
    assert response.json() == {
        "detail": "last_event_id must be a whole number >= 0 (a seq), got 'x1'"
    }


async def test_last_event_id_on_a_job_with_no_events_is_400(api: Api) -> None:
    job_id = (await api.client.post("/jobs", json={"prompt": "p"})).json()["job_id"]

    response = await api.client.get(f"/stream/{job_id}", headers={"Last-Event-ID": "1"})

    assert response.status_code == 400
    assert response.json() == {"detail": "Last-Event-ID 1 is beyond the job's last event (seq 0)"}


async def test_unknown_job_is_404(api: Api) -> None:
    response = await api.client.get("/stream/no-such-job")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "job 'no-such-job' not found (never submitted, or expired)"
    }


@pytest.mark.parametrize("job_id", ["bad!id", "x" * 129])
async def test_invalid_job_id_is_422_naming_it(api: Api, job_id: str) -> None:
    response = await api.client.get(f"/stream/{job_id}")

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["path", "job_id"]]


async def test_heartbeats_while_idle_carry_no_id(
    make_api: MakeApi, backend: dict[str, str]
) -> None:
    api = await make_api(**backend, heartbeat=0.05, block_ms=50, idle_timeout=0.6)
    job_id = (await api.client.post("/jobs", json={"prompt": "p"})).json()["job_id"]

    response = await api.client.get(f"/stream/{job_id}")

    frames = response.text.split("\n\n")
    assert frames[-1] == ""
    heartbeats, rest = frames[:-2], frames[-2]
    assert len(heartbeats) >= 3
    assert set(heartbeats) == {": heartbeat"}
    timeout = Event.from_json(rest.split("\n")[1].removeprefix("data: "))
    assert rest == f"event: error\ndata: {timeout.to_json()}"
    assert (timeout.seq, timeout.payload["reason"], timeout.payload["after_seq"]) == (
        0,
        "timeout",
        0,
    )


async def test_gap_event_carries_no_id(api: Api) -> None:
    transport = api.services.transport
    await transport.publish(job_id := "job-gap", Event("token", {"text": "a"}, ts=1.0))
    # Leave seq 2..3 unwritten: bump the job's seq counter past them.
    await api.services.redis.incrby("rs:{job-gap}:seq", 2)
    await transport.finish(job_id)

    response = await api.client.get(f"/stream/{job_id}")

    frames = response.text.split("\n\n")[:-1]
    assert [f.split("\n")[0] for f in frames] == ["id: 1", "event: gap", "id: 4"]
    data_line = frames[1].split("\n")[1]
    gap = Event.from_json(data_line.removeprefix("data: "))
    assert (gap.seq, gap.type, dict(gap.payload)) == (0, "gap", {"first": 2, "last": 3, "count": 2})
    assert frames[1] == f"event: gap\ndata: {gap.to_json()}"


@pytest.mark.parametrize("mode", ["poll", "blocking"])
async def test_resume_on_a_list_mode_that_pops_is_409_naming_the_setting(
    make_api: MakeApi, mode: str
) -> None:
    api = await make_api(backend="list", list_mode=mode)
    await publish_job(api)

    response = await api.client.get("/stream/job-1", headers={"Last-Event-ID": "2"})

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"backend list-{mode} removes events as it reads them, so a stream cannot "
        "resume after a seq; set RUNSTREAM_LIST_MODE=reliable or RUNSTREAM_BACKEND=streams"
    }


@pytest.mark.parametrize("mode", ["poll", "blocking"])
async def test_list_mode_that_pops_streams_a_first_read(make_api: MakeApi, mode: str) -> None:
    api = await make_api(backend="list", list_mode=mode, block_ms=100)
    # Published directly, `done` included: reading it back would pop it.
    published = [Event("token", {"text": t}, ts=1.0) for t in PAYLOAD_TEXTS]
    published.append(Event("done", {"tokens": 5}, ts=2.0))
    seqs = await api.services.transport.publish_many("job-1", published)
    events = [
        Event(e.type, e.payload, e.trace_id, s, e.ts) for e, s in zip(published, seqs, strict=True)
    ]

    response = await api.client.get("/stream/job-1")

    assert response.text == "".join(frame(event) for event in events)


async def test_stored_event_that_cannot_be_re_encoded_becomes_an_error_event(api: Api) -> None:
    transport = api.services.transport
    await transport.publish("job-nan", Event("token", {"text": "a"}, ts=1.0))
    # Another tool wrote JSON our encoder refuses: NaN is valid for json.loads only.
    key = "rs:{job-nan}:stream" if api.settings.backend == "streams" else "rs:{job-nan}:list"
    raw = '{"seq":2,"type":"token","payload":{"x":NaN},"trace_id":"","ts":1.0}'
    await api.services.redis.incr("rs:{job-nan}:seq")
    if api.settings.backend == "streams":
        await api.services.redis.xadd(key, {"e": raw}, id="0-2")
    else:
        await api.services.redis.rpush(key, raw)
    await transport.finish("job-nan")

    response = await api.client.get("/stream/job-nan")

    frames = response.text.split("\n\n")[:-1]
    assert [f.split("\n")[0] for f in frames] == ["id: 1", "event: error", "id: 3"]
    error = Event.from_json(frames[1].split("\n")[1].removeprefix("data: "))
    assert (error.seq, error.payload["reason"], error.payload["position"]) == (
        0,
        "bad_event",
        "seq 2",
    )


async def test_transport_failure_mid_stream_ends_with_an_error_event_without_id(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await publish_job(api)
    real_read = api.services.transport.read

    async def read_then_fail(job_id: str, after: int = 0) -> AsyncIterator[Event]:
        async for event in real_read(job_id, after):
            yield event
            raise RedisConnectionError("Connection reset by peer")

    async def open_then_fail(job_id: str, after: int = 0) -> AsyncIterator[Event]:
        return read_then_fail(job_id, after)

    monkeypatch.setattr(api.services.transport, "open_read", open_then_fail)

    response = await api.client.get("/stream/job-1")

    frames = response.text.split("\n\n")[:-1]
    assert frames[0] + "\n\n" == frame(events[0])
    error = Event.from_json(frames[1].split("\n")[1].removeprefix("data: "))
    assert frames[1] == f"event: error\ndata: {error.to_json()}"
    assert dict(error.payload) == {
        "reason": "transport_failed",
        "after_seq": 1,
        "type": "ConnectionError",
        "detail": "Connection reset by peer",
    }
    assert len(frames) == 2
    assert api.services.active_readers == 0
