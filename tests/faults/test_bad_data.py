"""A non-JSON entry written into a job's key by another tool, seen over HTTP."""

from __future__ import annotations

import logging

import httpx
import pytest
from redis.asyncio import Redis

from runstream.api import create_app
from runstream.core.errors import InvalidEvent
from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.core.settings import load_settings

GARBAGE = b"{broken"
BACKENDS = {
    "streams": {"backend": "streams"},
    "list-reliable": {"backend": "list", "list_mode": "reliable"},
}


def sse_frames(text: str) -> list[dict[str, str]]:
    frames = []
    for block in text.split("\n\n")[:-1]:
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        frames.append(fields)
    return frames


def parse_problem() -> str:
    try:
        Event.from_json(GARBAGE)
    except InvalidEvent as err:
        return str(err)
    raise AssertionError("the garbage entry decoded")


@pytest.mark.parametrize("backend", list(BACKENDS))
async def test_garbage_entry_is_an_error_event_naming_its_position(
    client: Redis, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = load_settings(**BACKENDS[backend], block_ms=100)
    app = create_app(settings, client)
    keys = KeySpace().job("junk")
    async with app.router.lifespan_context(app):
        transport = app.state.services.transport
        await transport.publish_many("junk", [Event("token", {"text": t}) for t in "ab"])
        if backend == "streams":
            # Another tool takes seq 3 and writes junk under its entry ID.
            await client.incr(keys.seq)
            await client.xadd(keys.stream, {"e": GARBAGE}, id="0-3")
            position, after_garbage = "0-3", [("gap", ""), ("token", "4"), ("done", "5")]
        else:
            await client.rpush(keys.list, GARBAGE)
            position, after_garbage = "rs:{junk}:log[2]", [("token", "3"), ("done", "4")]
        await transport.publish("junk", Event("token", {"text": "c"}))
        await transport.finish("junk")

        asgi = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=asgi, base_url="http://t") as http:
            with caplog.at_level(logging.ERROR, logger="runstream.backends.base"):
                response = await http.get("/stream/junk")

    frames = sse_frames(response.text)
    outline = [(f["event"], f.get("id", "")) for f in frames]
    assert outline == [("token", "1"), ("token", "2"), ("error", ""), *after_garbage]
    error = Event.from_json(frames[2]["data"])
    assert dict(error.payload) == {
        "reason": "bad_event",
        "position": position,
        "after_seq": 2,
        "detail": parse_problem(),
    }
    if backend == "streams":
        assert Event.from_json(frames[3]["data"]).payload == {"first": 3, "last": 3, "count": 1}
    text = "".join(Event.from_json(f["data"]).payload.get("text", "") for f in frames)
    assert text == "abc"
    assert [r.getMessage() for r in caplog.records] == [
        f"job junk: bad entry at {position} after seq 2: {parse_problem()}"
    ]
