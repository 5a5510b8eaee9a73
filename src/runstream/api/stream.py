"""`GET /stream/{job_id}`: a job's events as Server-Sent Events.

Framing is sse-starlette's: `id: <seq>` (stored events only), `event: <type>` and the
envelope as JSON on one `data:` line. The JSON has no raw CR or LF (JSON escapes them),
and sse-starlette splits data only on CR/LF, so U+2028 or U+0085 in a payload arrive as
they were sent. Events a consumer makes up (`gap`, an idle-timeout `error`) have seq 0
and get no `id:`, nor do heartbeat comments, so a client's Last-Event-ID is always a
real seq. The route must never sit behind compression: a compressor buffers the stream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Response
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent

from runstream.api.jobs import JobId
from runstream.api.services import Services, get_services
from runstream.core.errors import InvalidEvent, RunstreamError
from runstream.core.events import Event
from runstream.core.keys import KeySpace
from runstream.migrate.compat import job_mismatch

logger = logging.getLogger(__name__)

router = APIRouter()

_SEQ = re.compile(r"[0-9]+")
MAX_SEQ_DIGITS = 18
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RETRY_AFTER_SECONDS = 1
MIN_SEND_TIMEOUT = 10.0
# List modes that pop events as they read them: nothing is left to resume from.
DESTRUCTIVE_BACKENDS = frozenset({"list-poll", "list-blocking"})


def parse_last_event_id(header: str | None, query: str | None) -> int:
    """The seq a client resumes after; the header wins over the query parameter."""
    for name, value in (("Last-Event-ID", header), ("last_event_id", query)):
        if value is None or value == "":
            continue
        if not _SEQ.fullmatch(value):
            # ascii(): a header's non-ASCII bytes arrive decoded as Latin-1; show them escaped.
            raise HTTPException(
                400, f"{name} must be a whole number >= 0 (a seq), got {ascii(value[:40])}"
            )
        digits = len(value.lstrip("0"))
        if digits > MAX_SEQ_DIGITS:
            raise HTTPException(
                400, f"{name} is too large: a seq has at most {MAX_SEQ_DIGITS} digits, got {digits}"
            )
        return int(value.lstrip("0") or "0")
    return 0


@router.get("/stream/{job_id}", name="stream_job", response_model=None)
async def stream_job(
    job_id: JobId,
    services: Annotated[Services, Depends(get_services)],
    last_event_id: Annotated[str | None, Header()] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> Response:
    after = parse_last_event_id(last_event_id, last_event_id_query)
    if await _nothing_after(services, job_id, after):
        # 204 tells a browser's EventSource to stop reconnecting: it has seen `done`.
        return Response(status_code=204)
    backend = services.settings.backend_name
    if after > 0 and backend in DESTRUCTIVE_BACKENDS:
        raise HTTPException(409, _cannot_resume(backend))
    if backend in DESTRUCTIVE_BACKENDS and await _consumed(services, job_id):
        raise HTTPException(410, _nothing_left(job_id, backend))
    if services.readers.locked():
        raise HTTPException(
            503,
            "every reader slot is taken (RUNSTREAM_MAX_CONNECTIONS); retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    mismatch = await job_mismatch(services.redis, services.settings, job_id)
    # A reader conflict (list-poll, list-blocking: one reader per job) raises here: 409.
    events = None if mismatch else await services.transport.open_read(job_id, after)

    logger.info("job %s: stream opened after seq %d", job_id, after)
    settings = services.settings
    return EventSourceResponse(
        _sse_events(services, job_id, after, events, mismatch),
        headers=SSE_HEADERS,
        ping=settings.heartbeat,
        ping_message_factory=_heartbeat,
        sep="\n",
        send_timeout=max(MIN_SEND_TIMEOUT, 2 * settings.heartbeat),
    )


def _cannot_resume(backend_name: str) -> str:
    return (
        f"backend {backend_name} removes events as it reads them, so a stream cannot resume "
        "after a seq; set RUNSTREAM_LIST_MODE=reliable or RUNSTREAM_BACKEND=streams"
    )


def _nothing_left(job_id: str, backend_name: str) -> str:
    return (
        f"job {job_id!r} has finished and backend {backend_name} removed its events as they "
        "were read, so nothing is left to stream; RUNSTREAM_LIST_MODE=reliable or "
        "RUNSTREAM_BACKEND=streams keep them"
    )


async def _consumed(services: Services, job_id: str) -> bool:
    """True if a popping mode's job finished and its list is empty: a read would only wait."""
    data = KeySpace(services.settings.key_prefix).job(job_id).list
    return await services.queue.has_finished(job_id) and not await services.redis.llen(data)


async def _nothing_after(services: Services, job_id: str, after: int) -> bool:
    """Check the job exists and `after` is in range; True if the job ended at `after`."""
    status = await services.queue.status(job_id)
    last = await services.transport.last_seq(job_id)
    if status is None and last is None:
        raise HTTPException(404, f"job {job_id!r} not found (never submitted, or expired)")
    if after > (last or 0):
        raise HTTPException(
            400,
            f"Last-Event-ID {after} is beyond the job's last event (seq {last or 0})",
        )
    return after > 0 and after == last and await services.queue.has_finished(job_id)


async def _sse_events(
    services: Services,
    job_id: str,
    after: int,
    opened: AsyncIterator[Event] | None,
    mismatch: dict[str, Any] | None,
) -> AsyncIterator[ServerSentEvent]:
    # The slot is taken here, not in the route: a generator that never starts (a HEAD
    # request, a client gone before the first byte) then holds nothing.
    last = after
    if opened is None:
        yield to_sse(Event("error", mismatch or {}))
        return
    async with services.readers:
        services.active_readers += 1
        try:
            async with _closing(opened) as events:
                async for event in events:
                    last = max(last, event.seq)
                    yield _encoded(job_id, event)
        except (RedisError, RunstreamError) as err:
            logger.exception("job %s: stream failed after seq %d", job_id, last)
            failure = {"reason": "transport_failed", "after_seq": last, "type": type(err).__name__}
            yield to_sse(Event("error", {**failure, "detail": str(err)}))
        finally:
            services.active_readers -= 1
            logger.info("job %s: stream closed after seq %d", job_id, last)


@asynccontextmanager
async def _closing(events: AsyncIterator[Event]) -> AsyncIterator[AsyncIterator[Event]]:
    # Close the transport's reader at once when the client goes, not when it is collected.
    try:
        yield events
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _encoded(job_id: str, event: Event) -> ServerSentEvent:
    try:
        return to_sse(event)
    except InvalidEvent as err:
        # Stored JSON can hold what our encoder refuses (NaN, say); say so and go on.
        logger.error("job %s: event seq %d cannot be re-encoded: %s", job_id, event.seq, err)
        problem = {"reason": "bad_event", "position": f"seq {event.seq}", "detail": str(err)}
        return to_sse(Event("error", {**problem, "after_seq": event.seq}))


def to_sse(event: Event) -> ServerSentEvent:
    """One event as SSE: an `id:` only for stored events (seq >= 1)."""
    event_id = str(event.seq) if event.is_stored else None
    return ServerSentEvent(data=event.to_json(), event=event.type, id=event_id, sep="\n")


def _heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat", sep="\n")
