"""Run one job: stream a LangGraph graph and publish each item as an event.

The graph runs with `astream(input, stream_mode=["messages", "updates", "custom"])`,
which yields `(mode, data)` pairs:

- `("messages", (message, metadata))`: a chunk of a streaming chat model becomes a `token`
  event {text, node, message_id}. LangGraph may also emit a whole message (a node's
  output, a model's final message); one whose id already came as chunks is dropped, so
  its text is never relayed twice. Any other whole message becomes a `message` event
  {text, node, message_id, role}.
- `("updates", {node: delta})`: an `update` event {node: delta}, the delta made JSON-safe
  (a message becomes {type, content, id}).
- `("custom", data)`: what a node wrote with `get_stream_writer()`, as a `custom` event
  (data that is not a mapping is wrapped as {"value": data}).

Items are published as they come. A separate task publishes them, so the graph is never
held up by a round trip to Redis; items that piled up meanwhile go in one `publish_many`.
The job ends with `done` {events, tokens, duration_s}, where `events` counts the events
before `done`; a graph that raises ends with `error` {type, message} then `done`.
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

from runstream.core.events import Event
from runstream.core.transport import Transport
from runstream.worker.queue import JobQueue

logger = logging.getLogger(__name__)

STREAM_MODES = ["messages", "updates", "custom"]

# Items the graph may yield before the publisher catches up; beyond it the graph waits.
MAX_PENDING_ITEMS = 10_000


class Graph(Protocol):
    """What the runner needs of a graph: LangGraph's `astream`."""

    def astream(self, input: Any, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class JobResult:
    """How a job ended. `error` is the payload of its `error` event, if any."""

    events: int
    tokens: int
    duration_s: float
    done_seq: int
    error: dict[str, str] | None = None


@dataclass
class _Translator:
    """Turns `astream` items into events, remembering which messages came as chunks."""

    trace_id: str
    streamed_ids: set[str] = field(default_factory=set)
    tokens: int = 0

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
        message_id = message.id or ""
        if isinstance(message, BaseMessageChunk):
            text = message.text
            if message_id:
                self.streamed_ids.add(message_id)
            if not text:
                return None
            self.tokens += 1
            payload = {"text": text, "node": node, "message_id": message_id}
            return Event("token", payload, self.trace_id)
        if message_id in self.streamed_ids:
            return None
        payload = {"text": message.text, "node": node, "message_id": message_id}
        return Event("message", {**payload, "role": message.type}, self.trace_id)


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
    ) -> None:
        self.graph = graph
        self.transport = transport
        self.queue = queue
        self.worker_name = worker_name

    async def run(self, job_id: str, job_input: Mapping[str, Any]) -> JobResult:
        """Run the job to its `done` event. Raises only if publishing fails."""
        started = time.monotonic()
        trace_id = str(job_input.get("trace_id", "") or "")
        translator = _Translator(trace_id)
        if self.queue is not None:
            await self.queue.mark_running(job_id, self.worker_name)
        logger.info("job %s started on %s", job_id, self.worker_name)

        published, error = await self._stream(job_id, job_input, translator)

        duration = round(time.monotonic() - started, 3)
        payload = {"events": published, "tokens": translator.tokens, "duration_s": duration}
        # Status first: a client that sees `done` in the stream then finds the status final.
        await self._record(job_id, translator.tokens, error)
        done_seq = await self.transport.finish(job_id, payload, error=error, trace_id=trace_id)
        result = JobResult(published, translator.tokens, duration, done_seq, error)
        logger.info(
            "job %s %s at seq %d: %d events, %d tokens, %.3f s",
            job_id,
            "failed" if error else "done",
            done_seq,
            published,
            translator.tokens,
            duration,
        )
        return result

    async def _stream(
        self, job_id: str, job_input: Mapping[str, Any], translator: _Translator
    ) -> tuple[int, dict[str, str] | None]:
        """Run the graph while publishing its events; return (events published, error)."""
        pending: asyncio.Queue[Event | None] = asyncio.Queue(MAX_PENDING_ITEMS)
        producer = asyncio.create_task(self._produce(job_id, job_input, translator, pending))
        try:
            published = await self._publish_all(job_id, pending)
        except BaseException:
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)
            raise
        return published, await producer

    async def _produce(
        self,
        job_id: str,
        job_input: Mapping[str, Any],
        translator: _Translator,
        pending: asyncio.Queue[Event | None],
    ) -> dict[str, str] | None:
        error = None
        try:
            stream = self.graph.astream(graph_input(job_input), stream_mode=STREAM_MODES)
            # Closed here, not by the garbage collector, also when the job is cancelled.
            async with contextlib.aclosing(stream):
                async for mode, data in stream:
                    event = translator.event(mode, data)
                    if event is not None:
                        await pending.put(event)
        except Exception as exc:
            logger.exception("job %s: graph raised %s", job_id, type(exc).__name__)
            error = {"type": type(exc).__name__, "message": str(exc)}
        await pending.put(None)
        return error

    async def _publish_all(self, job_id: str, pending: asyncio.Queue[Event | None]) -> int:
        published = 0
        while True:
            batch = [await pending.get()]
            while batch[-1] is not None and not pending.empty():
                batch.append(pending.get_nowait())
            events = [event for event in batch if event is not None]
            if events:
                seqs = await self.transport.publish_many(job_id, events)
                published += len(seqs)
                logger.debug("job %s: published seq %d..%d", job_id, seqs[0], seqs[-1])
            if batch[-1] is None:
                return published

    async def _record(self, job_id: str, tokens: int, error: dict[str, str] | None) -> None:
        if self.queue is None:
            return
        summary = f"{error.get('type', 'Error')}: {error.get('message', '')}" if error else None
        await self.queue.mark_finished(job_id, tokens=tokens, error=summary)


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
