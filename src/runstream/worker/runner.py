"""Run one job: stream a LangGraph graph and publish each item as an event.

The graph runs with `astream(input, stream_mode=["messages", "updates", "custom"])`,
which yields `(mode, data)` pairs:

- `("messages", (message, metadata))`: a chunk of a streaming chat model becomes a `token`
  event {text, node, message_id}. LangGraph may also emit a whole message (a node's
  output, a model's final message). One whose id already came as chunks is dropped, so
  its text is never relayed twice; so is one whose text equals what the same node streamed
  in the same step (one message's chunks, or all of them joined): a node that streams a
  model and returns `AIMessage(content=joined)` makes a new id for the same text. Any
  other whole message becomes a `message` event {text, node, message_id, role}.
- `("updates", {node: delta})`: an `update` event {node: delta}, the delta made JSON-safe
  (a message becomes {type, content, id}).
- `("custom", data)`: what a node wrote with `get_stream_writer()`, as a `custom` event
  (data that is not a mapping is wrapped as {"value": data}).

Items are published as they come. A separate task publishes them, so the graph is never
held up by a round trip to Redis; items that piled up meanwhile go in one `publish_many`.
The job ends with `done` {events, tokens, duration_s}, where `events` counts the events
before `done`. It ends with `error` then `done` when the graph raises (any exception,
`KeyboardInterrupt` and `SystemExit` too: {type, message}), when it yields an item that
cannot be encoded ({type: "InvalidEvent", message naming the field}; the events before it
are published, the graph is stopped), or when it runs longer than `job_timeout`
({reason: "timeout", type: "TimeoutError", message}). The graph runs with
`config={"configurable": {"thread_id": job_id}}`, so a graph compiled with a checkpointer
works. Error messages are made valid UTF-8 (a lone surrogate becomes `?`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import BaseMessage, BaseMessageChunk
from pydantic import BaseModel

from runstream.core.errors import InvalidEvent
from runstream.core.events import Event
from runstream.core.transport import Transport
from runstream.worker.contain import GraphExited, contain_graph_exits, graph_scope
from runstream.worker.queue import JobQueue

logger = logging.getLogger(__name__)

STREAM_MODES = ["messages", "updates", "custom"]

# Items the graph may yield before the publisher catches up; beyond it the graph waits.
MAX_PENDING_ITEMS = 10_000

# A running job's token count in its status is at most this old (one HSET per interval).
TOKENS_RECORD_SECONDS = 1.0


class Graph(Protocol):
    """What the runner needs of a graph: LangGraph's `astream`."""

    def astream(self, input: Any, *args: Any, **kwargs: Any) -> Any: ...


Error = dict[str, str]


@dataclass
class JobResult:
    """How a job ended. `error` is the payload of its `error` event, if any."""

    events: int
    tokens: int
    duration_s: float
    done_seq: int
    error: Error | None = None


@dataclass
class _Translator:
    """Turns `astream` items into events, remembering which messages came as chunks."""

    trace_id: str
    streamed_ids: set[str] = field(default_factory=set)
    # (node, step) -> message id -> the text its chunks carried
    streamed_text: dict[tuple[str, Any], dict[str, str]] = field(default_factory=dict)
    tokens: int = 0
    published_tokens: int = 0
    recorded_tokens: int = 0
    recorded_at: float = field(default_factory=time.monotonic)

    def event(self, mode: str, data: Any) -> Event | None:
        if mode == "messages":
            return self._message(*data)
        if mode == "updates":
            return Event("update", _updates(data), self.trace_id)
        if mode == "custom":
            payload = json_safe(data) if isinstance(data, Mapping) else {"value": json_safe(data)}
            return Event("custom", payload, self.trace_id)
        return None

    def _message(self, message: BaseMessage, metadata: Mapping[str, Any]) -> Event | None:
        node = str(metadata.get("langgraph_node", ""))
        step = (node, metadata.get("langgraph_step"))
        message_id = message.id or ""
        if isinstance(message, BaseMessageChunk):
            text = message.text
            if message_id:
                self.streamed_ids.add(message_id)
            if not text:
                return None
            texts = self.streamed_text.setdefault(step, {})
            texts[message_id] = texts.get(message_id, "") + text
            self.tokens += 1
            payload = {"text": text, "node": node, "message_id": message_id}
            return Event("token", payload, self.trace_id)
        if message_id in self.streamed_ids or self._was_streamed(step, message.text):
            return None
        payload = {"text": message.text, "node": node, "message_id": message_id}
        return Event("message", {**payload, "role": message.type}, self.trace_id)

    def _was_streamed(self, step: tuple[str, Any], text: str) -> bool:
        texts = self.streamed_text.get(step)
        if not texts or not text:
            return False
        return text in texts.values() or text == "".join(texts.values())


def graph_input(job_input: Mapping[str, Any]) -> Any:
    """The graph's input: `job_input["input"]` if given, else `{"prompt": ...}`."""
    if "input" in job_input:
        return job_input["input"]
    return {"prompt": job_input.get("prompt", "")}


class JobRunner:
    """Runs jobs of one graph and publishes their events through a transport.

    With a `queue`, the job's status hash follows it: `running`, then `done` or `failed`
    with its counts.
    """

    def __init__(
        self,
        graph: Graph,
        transport: Transport,
        queue: JobQueue | None = None,
        *,
        worker_name: str = "worker",
        job_timeout: float | None = None,
    ) -> None:
        self.graph = graph
        self.transport = transport
        self.queue = queue
        self.worker_name = worker_name
        self.job_timeout = job_timeout
        self.tokens_record_seconds = TOKENS_RECORD_SECONDS

    async def run(self, job_id: str, job_input: Mapping[str, Any]) -> JobResult:
        """Run the job to its `done` event. Raises only if publishing fails."""
        started = time.monotonic()
        trace_id = utf8_safe(str(job_input.get("trace_id", "") or ""))
        translator = _Translator(trace_id)
        contain_graph_exits()
        if self.queue is not None:
            await self.queue.mark_running(job_id, self.worker_name)
        logger.info("job %s started on %s", job_id, self.worker_name)

        published, error = await self._stream(job_id, job_input, translator)

        duration = round(time.monotonic() - started, 3)
        tokens = translator.published_tokens
        payload = {"events": published, "tokens": tokens, "duration_s": duration}
        # Status first: a client that sees `done` in the stream then finds the status final.
        await self._record(job_id, tokens, error)
        done_seq = await self.transport.finish(job_id, payload, error=error, trace_id=trace_id)
        result = JobResult(published, tokens, duration, done_seq, error)
        logger.info(
            "job %s %s at seq %d: %d events, %d tokens, %.3f s",
            job_id,
            "failed" if error else "done",
            done_seq,
            published,
            tokens,
            duration,
        )
        return result

    async def _stream(
        self, job_id: str, job_input: Mapping[str, Any], translator: _Translator
    ) -> tuple[int, Error | None]:
        """Run the graph while publishing its events; return (events published, error)."""
        pending: asyncio.Queue[Event | None] = asyncio.Queue(MAX_PENDING_ITEMS)
        producer = asyncio.create_task(self._produce(job_id, job_input, translator, pending))
        try:
            published, bad_output = await self._publish_all(job_id, pending, translator)
        except BaseException:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            await self._record_tokens(job_id, translator, final=True)
            raise
        if bad_output is not None:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            return published, bad_output
        return published, await producer

    async def _produce(
        self,
        job_id: str,
        job_input: Mapping[str, Any],
        translator: _Translator,
        pending: asyncio.Queue[Event | None],
    ) -> Error | None:
        error = None
        deadline = asyncio.timeout(self.job_timeout)
        try:
            with graph_scope():
                async with deadline:
                    await self._run_graph(job_id, job_input, translator, pending)
        except TimeoutError as exc:
            error = self._timeout_error(job_id) if deadline.expired() else _graph_error(job_id, exc)
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            error = _graph_error(job_id, exc)
        await pending.put(None)
        return error

    async def _run_graph(
        self,
        job_id: str,
        job_input: Mapping[str, Any],
        translator: _Translator,
        pending: asyncio.Queue[Event | None],
    ) -> None:
        config = {"configurable": {"thread_id": job_id}}
        stream = self.graph.astream(graph_input(job_input), config=config, stream_mode=STREAM_MODES)
        # Closed here, not by the garbage collector, also when the job is cancelled.
        async with contextlib.aclosing(stream):
            async for mode, data in stream:
                event = translator.event(mode, data)
                if event is not None:
                    await pending.put(event)

    def _timeout_error(self, job_id: str) -> Error:
        message = f"the job ran longer than RUNSTREAM_JOB_TIMEOUT ({self.job_timeout:g} s)"
        logger.error("job %s: %s; stopped it", job_id, message)
        return {"reason": "timeout", "type": "TimeoutError", "message": message}

    async def _publish_all(
        self, job_id: str, pending: asyncio.Queue[Event | None], translator: _Translator
    ) -> tuple[int, Error | None]:
        """Publish until the producer's end marker, or until an event cannot be encoded."""
        published = 0
        while True:
            batch = [await pending.get()]
            while batch[-1] is not None and not pending.empty():
                batch.append(pending.get_nowait())
            events = [event for event in batch if event is not None]
            if events:
                count, bad_output = await self._publish_valid(job_id, events)
                translator.published_tokens += _tokens_in(events[:count])
                await self._record_tokens(job_id, translator)
                published += count
                if bad_output is not None:
                    return published, bad_output
            if batch[-1] is None:
                return published, None

    async def _publish_valid(self, job_id: str, events: list[Event]) -> tuple[int, Error | None]:
        try:
            seqs = await self.transport.publish_many(job_id, events)
        except InvalidEvent:
            # The transport encodes a whole batch before writing any of it, so nothing of
            # this batch is stored yet: publish the events before the first bad one.
            first_bad, err = _first_invalid(events)
            seqs = (
                await self.transport.publish_many(job_id, events[:first_bad]) if first_bad else []
            )
            logger.error(
                "job %s: graph output after seq %d cannot be published: %s",
                job_id,
                seqs[-1] if seqs else 0,
                err,
            )
            return len(seqs), {"type": "InvalidEvent", "message": utf8_safe(str(err))}
        logger.debug("job %s: published seq %d..%d", job_id, seqs[0], seqs[-1])
        return len(seqs), None

    async def _record_tokens(
        self, job_id: str, translator: _Translator, *, final: bool = False
    ) -> None:
        """Keep the status's token count near the published one while the job runs.

        `final` is the count of a job stopped before its end (cancelled, or its publish
        failed): recorded if Redis still answers, so an abandoned job does not show 0.
        """
        count = translator.published_tokens
        if self.queue is None or count == translator.recorded_tokens:
            return
        now = time.monotonic()
        if not final and now - translator.recorded_at < self.tokens_record_seconds:
            return
        try:
            await self.queue.record_tokens(job_id, count)
        except Exception as err:
            if not final:
                raise
            logger.warning("job %s: could not record its %d tokens (%s)", job_id, count, err)
            return
        translator.recorded_tokens, translator.recorded_at = count, now

    async def _record(self, job_id: str, tokens: int, error: Error | None) -> None:
        if self.queue is None:
            return
        summary = f"{error.get('type', 'Error')}: {error.get('message', '')}" if error else None
        await self.queue.mark_finished(job_id, tokens=tokens, error=summary)


def _graph_error(job_id: str, exc: BaseException) -> Error:
    if isinstance(exc, GraphExited):
        exc = exc.original
    logger.error("job %s: graph raised %s", job_id, type(exc).__name__, exc_info=exc)
    return {"type": type(exc).__name__, "message": utf8_safe(str(exc))}


def _tokens_in(events: list[Event]) -> int:
    return sum(1 for event in events if event.type == "token")


def _first_invalid(events: list[Event]) -> tuple[int, InvalidEvent]:
    for index, event in enumerate(events):
        try:
            event.to_json()
        except InvalidEvent as err:
            return index, err
    # The transport refused the batch, yet each event encodes: report the batch.
    return 0, InvalidEvent("payload: the transport refused the batch as invalid")


def utf8_safe(text: str) -> str:
    """`text` with any lone surrogate replaced by `?`, so it can be sent to Redis."""
    if text.isascii():
        return text
    return text.encode("utf-8", "replace").decode("utf-8")


def _updates(data: Any) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return {str(node): json_safe(delta) for node, delta in data.items()}
    return {"value": json_safe(data)}


def json_safe(value: Any) -> Any:
    """`value` as plain JSON types: messages become {type, content, id}, others str()."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, BaseMessage):
        return {"type": value.type, "content": value.text, "id": value.id}
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if isinstance(value, BaseModel):
        return json_safe(value.model_dump())
    return str(value)
