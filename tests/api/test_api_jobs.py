"""POST /jobs, GET /jobs/{job_id}, GET /healthz."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from api.support import Api, MakeApi
from runstream.api import create_app
from runstream.api.jobs import MAX_PROMPT_CHARS
from runstream.core.settings import load_settings

JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")


async def test_submit_answers_202_with_job_id_and_urls(api: Api) -> None:
    response = await api.client.post("/jobs", json={"prompt": "hello", "input": {"k": 1}})

    assert response.status_code == 202
    body = response.json()
    assert JOB_ID.fullmatch(body["job_id"])
    assert body == {
        "job_id": body["job_id"],
        "stream_url": f"/stream/{body['job_id']}",
        "status_url": f"/jobs/{body['job_id']}",
    }
    assert response.headers["location"] == body["status_url"]


async def test_submitted_job_is_queued_with_its_input(api: Api) -> None:
    first = (await api.client.post("/jobs", json={"prompt": "안녕"})).json()
    second = (await api.client.post("/jobs", json={"prompt": "안녕", "input": {"k": [1]}})).json()

    status = await api.client.get(first["status_url"])
    assert status.status_code == 200
    assert status.json()["job_id"] == first["job_id"]
    assert status.json()["status"] == "queued"
    assert first["job_id"] != second["job_id"]
    entries = await api.services.redis.xrange("rs:jobs")
    inputs = [json.loads(fields[b"input"]) for _, fields in entries]
    assert inputs == [{"prompt": "안녕"}, {"prompt": "안녕", "input": {"k": [1]}}]


async def test_trace_id_reaches_the_job_input(api: Api) -> None:
    await api.client.post("/jobs", json={"prompt": "p", "trace_id": "trace-7"})

    [(_, fields)] = await api.services.redis.xrange("rs:jobs")
    assert json.loads(fields[b"input"]) == {"prompt": "p", "trace_id": "trace-7"}


async def test_openapi_documents_the_job_body(api: Api) -> None:
    response = await api.client.get("/openapi.json")

    body = response.json()["paths"]["/jobs"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert "required" not in schema
    assert set(schema["properties"]) == {"prompt", "input", "trace_id"}


async def test_invalid_json_is_422_naming_the_body(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b'{"prompt": "x"', headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert [(error["loc"], error["type"]) for error in detail] == [(["body"], "json_invalid")]


async def test_neither_prompt_nor_input_is_422_naming_the_body(api: Api) -> None:
    response = await api.client.post("/jobs", json={"trace_id": "t"})

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body"]]
    assert (
        response.json()["message"] == "body: Value error, give a prompt or a graph input (or both)"
    )
    assert await api.services.redis.exists("rs:jobs") == 0


async def test_graph_input_without_a_prompt_is_accepted(api: Api) -> None:
    response = await api.client.post("/jobs", json={"input": {"question": "ping"}})

    assert response.status_code == 202
    [(_, fields)] = await api.services.redis.xrange("rs:jobs")
    assert json.loads(fields[b"input"]) == {"input": {"question": "ping"}}


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_body_that_is_not_json_by_content_type_is_415(api: Api, content_type: str) -> None:
    response = await api.client.post(
        "/jobs", content=b'{"prompt": "x"}', headers={"content-type": content_type}
    )

    assert response.status_code == 415
    assert response.json() == {
        "detail": f"Content-Type must be application/json, got {content_type!r}"
    }
    assert await api.services.redis.exists("rs:jobs") == 0


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/ld+json"]
)
async def test_json_content_types_are_accepted(api: Api, content_type: str) -> None:
    response = await api.client.post(
        "/jobs", content=b'{"prompt": "x"}', headers={"content-type": content_type}
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (b'{"input": {"x": NaN}}', ["body", "input", "x"]),
        (b'{"prompt": "p", "input": {"a": [1, Infinity]}}', ["body", "input", "a", 1]),
        (b'{"input": {"deep": {"n": -Infinity}}}', ["body", "input", "deep", "n"]),
        (b'{"input": {"big": 1e999}}', ["body", "input", "big"]),
    ],
)
async def test_non_finite_number_in_input_is_422_naming_it(
    api: Api, raw: bytes, loc: list[str | int]
) -> None:
    response = await api.client.post(
        "/jobs", content=raw, headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "loc": loc,
            "msg": "NaN and infinite numbers are not valid JSON; send a finite number or a string",
            "type": "finite_number",
        }
    ]
    assert await api.services.redis.exists("rs:jobs") == 0


async def test_blank_prompt_is_422_naming_prompt(api: Api) -> None:
    response = await api.client.post("/jobs", json={"prompt": " \n\t "})

    assert response.status_code == 422
    assert response.json()["message"] == "body.prompt: Value error, must not be blank"


async def test_wrong_types_and_unknown_fields_are_422_naming_each(api: Api) -> None:
    response = await api.client.post("/jobs", json={"prompt": 3, "input": [], "promt": "x"})

    assert response.status_code == 422
    locs = [error["loc"] for error in response.json()["detail"]]
    assert locs == [["body", "prompt"], ["body", "input"], ["body", "promt"]]


async def test_body_that_is_not_an_object_is_422(api: Api) -> None:
    response = await api.client.post("/jobs", json=["prompt"])

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]


async def test_prompt_over_the_length_limit_is_422(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=10 * MAX_PROMPT_CHARS)

    response = await api.client.post("/jobs", json={"prompt": "x" * (MAX_PROMPT_CHARS + 1)})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]


async def test_oversize_body_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=256)

    response = await api.client.post("/jobs", json={"prompt": "x" * 300})

    assert response.status_code == 413
    assert response.json() == {
        "detail": "request body is larger than 256 bytes (RUNSTREAM_MAX_BODY_BYTES)"
    }
    assert await api.services.redis.exists("rs:jobs") == 0


async def test_oversize_chunked_body_without_length_is_413(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=256)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 50
        yield b'"}'

    response = await api.client.post(
        "/jobs", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert "content-length" not in response.request.headers


async def test_body_at_the_limit_is_accepted(make_api: MakeApi) -> None:
    api = await make_api(max_body_bytes=256)
    body = json.dumps({"prompt": "x" * 200}).encode()
    body += b" " * (256 - len(body))

    response = await api.client.post(
        "/jobs", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 202


async def test_status_of_unknown_job_is_404(api: Api) -> None:
    response = await api.client.get("/jobs/no-such-job")

    assert response.status_code == 404
    assert response.json() == {
        "detail": "job 'no-such-job' not found (never submitted, or expired)"
    }


async def test_status_with_invalid_job_id_is_422_naming_it(api: Api) -> None:
    response = await api.client.get("/jobs/bad!id")

    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["path", "job_id"]]


async def test_healthz_reports_redis_and_backend(api: Api) -> None:
    response = await api.client.get("/healthz")

    assert response.status_code == 200
    reads = "stream" if api.settings.backend == "streams" else "list"
    assert response.json() == {
        "redis": "ok",
        "backend": api.settings.backend_name,
        "reads": reads,
        "workers": {},
    }


@pytest.fixture
async def api_without_redis() -> AsyncIterator[httpx.AsyncClient]:
    """The app with a Redis client pointed at a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    dead = Redis.from_url(url, socket_connect_timeout=0.5)
    app = create_app(load_settings(redis_url=url, backend="streams"), dead)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        yield client
    await dead.aclose()


async def test_healthz_is_503_when_redis_does_not_answer(
    api_without_redis: httpx.AsyncClient,
) -> None:
    response = await api_without_redis.get("/healthz")

    assert response.status_code == 503
    assert (response.json()["redis"], response.json()["backend"]) == ("error", "streams")


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/jobs"), ("GET", "/stream/j1"), ("GET", "/jobs/j1")]
)
async def test_requests_are_503_with_retry_after_when_redis_does_not_answer(
    api_without_redis: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await api_without_redis.request(method, path, json={"prompt": "p"})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"].startswith("Redis is unavailable (ConnectionError: ")


async def test_a_redis_error_reply_is_500_with_a_json_message(api: Api) -> None:
    # Another tool left a string where the job's meta hash belongs: HGETALL fails.
    await api.services.redis.set("rs:{job-x}:meta", "not a hash")

    response = await api.client.get("/jobs/job-x")

    assert response.status_code == 500
    assert response.json()["detail"].startswith("Redis answered with an error (ResponseError: ")


async def test_non_ascii_content_type_is_shown_escaped(api: Api) -> None:
    response = await api.client.post(
        "/jobs", content=b'{"prompt": "x"}', headers={"content-type": "text/\u00e9".encode()}
    )

    assert response.status_code == 415
    assert response.json() == {
        "detail": "Content-Type must be application/json, got 'text/\\xc3\\xa9'"
    }
