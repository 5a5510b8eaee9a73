"""Let the event loop notice a lost SSE client between two events.

uvicorn learns that a client went away in `connection_lost`, a callback the event loop
runs only once the running task yields. sse-starlette sends one body message per event
and does not yield while the body iterator has events ready, and uvicorn's send does not
yield either, so a burst of stored events (up to `read_count` per read) is written to the
closed transport in one go; asyncio logs `socket.send() raised exception.` for every write
from the fifth on, hundreds of lines per dropped client. Yielding once after each body
message lets `connection_lost` run as soon as a write fails: uvicorn then drops further
sends, its `http.disconnect` stops the stream, and nothing is written to the dead socket.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

STREAM_PATH_PREFIX = "/stream/"


class YieldBetweenEvents:
    """ASGI middleware: after each response body message of a stream route, yield once."""

    def __init__(self, app: ASGIApp, path_prefix: str = STREAM_PATH_PREFIX) -> None:
        self.app = app
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return

        async def send_then_yield(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body":
                await asyncio.sleep(0)

        await self.app(scope, receive, send_then_yield)
