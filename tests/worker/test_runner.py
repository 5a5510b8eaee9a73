"""The job runner: exact event sequences from a graph's stream, on every backend."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from runstream.core.events import Event
from runstream.worker.demo_graph import DEMO_PLAN, build_demo_graph, demo_answer, split_words
from runstream.worker.queue import JobQueue
from runstream.worker.runner import JobRunner, graph_input, json_safe

from .conftest import Setup

FAST = 10_000.0


async def read_all(setup: Setup, job_id: str) -> list[Event]:
    return [event async for event in setup.transport.read(job_id)]


async def test_demo_job_publishes_the_exact_event_sequence(setup: Setup) -> None:
    queue = JobQueue(setup.redis, setup.settings)
    await queue.submit("demo-1", {"prompt": "Redis Streams와 리스트의 차이를 알려줘"})
    runner = JobRunner(build_demo_graph(FAST), setup.transport, queue, worker_name="w1")

    result = await runner.run("demo-1", {"prompt": "Redis Streams와 리스트의 차이를 알려줘"})
    events = await read_all(setup, "demo-1")

    answer = demo_answer("한국어")
    words = split_words(answer)
    k = len(words)
    assert [e.seq for e in events] == list(range(1, k + 5))
    assert [e.type for e in events] == ["custom", "update", *["token"] * k, "update", "done"]
    assert events[0].payload == {"step": "plan", "language": "ko", "plan": DEMO_PLAN}
    assert events[1].payload == {"plan": {"plan": DEMO_PLAN}}
    tokens = events[2 : 2 + k]
    message_id = tokens[0].payload["message_id"]
    assert [t.payload for t in tokens] == [
        {"text": word, "node": "answer", "message_id": message_id} for word in words
    ]
    assert "".join(t.payload["text"] for t in tokens) == answer
    assert events[-2].payload == {
        "answer": {"messages": [{"type": "ai", "content": answer, "id": message_id}]}
    }
    done = events[-1].payload
    assert (done["events"], done["tokens"]) == (k + 3, k)
    assert done["duration_s"] >= 0
    assert (result.events, result.tokens, result.done_seq, result.error) == (k + 3, k, k + 4, None)
    status = await queue.status("demo-1")
    assert status is not None
    assert (status.status, status.events, status.tokens, status.error) == ("done", k + 4, k, None)


class FakeGraph:
    """A stand-in for a compiled graph that yields scripted `astream` items."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        self.items = items
        self.calls: list[tuple[Any, Any]] = []

    async def astream(self, graph_input: Any, stream_mode: Any = None) -> AsyncIterator[Any]:
        self.calls.append((graph_input, stream_mode))
        for item in self.items:
            yield item


def meta(node: str) -> dict[str, Any]:
    return {"langgraph_node": node, "langgraph_step": 1}


async def test_whole_message_after_its_chunks_is_not_relayed_twice(setup: Setup) -> None:
    graph = FakeGraph(
        [
            ("messages", (AIMessageChunk(content="Hello", id="m1"), meta("talk"))),
            ("messages", (AIMessageChunk(content=" world", id="m1"), meta("talk"))),
            ("messages", (AIMessageChunk(content="", id="m1"), meta("talk"))),
            ("messages", (AIMessage(content="Hello world", id="m1"), meta("talk"))),
            ("messages", (AIMessage(content="Unstreamed", id="m2"), meta("tool"))),
        ]
    )

    result = await JobRunner(graph, setup.transport).run("dedupe", {"prompt": "p"})
    events = await read_all(setup, "dedupe")

    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "token", {"text": "Hello", "node": "talk", "message_id": "m1"}),
        (2, "token", {"text": " world", "node": "talk", "message_id": "m1"}),
        (3, "message", {"text": "Unstreamed", "node": "tool", "message_id": "m2", "role": "ai"}),
    ]
    assert events[-1].seq == 4
    assert events[-1].type == "done"
    assert (result.events, result.tokens) == (3, 2)
    assert graph.calls == [({"prompt": "p"}, ["messages", "updates", "custom"])]


async def test_custom_and_updates_are_made_json_safe(setup: Setup) -> None:
    graph = FakeGraph(
        [
            ("custom", "just text"),
            ("custom", {"progress": 0.5, "ratio": float("inf")}),
            ("updates", {"node": {"seen": {3}, "msg": HumanMessage("hi", id="h1"), "n": None}}),
            ("values", {"ignored": True}),
        ]
    )

    await JobRunner(graph, setup.transport).run("safe", {"input": {"anything": 1}})
    events = await read_all(setup, "safe")

    assert [(e.type, dict(e.payload)) for e in events[:-1]] == [
        ("custom", {"value": "just text"}),
        ("custom", {"progress": 0.5, "ratio": "inf"}),
        (
            "update",
            {
                "node": {
                    "seen": [3],
                    "msg": {"type": "human", "content": "hi", "id": "h1"},
                    "n": None,
                }
            },
        ),
    ]
    assert graph.calls[0][0] == {"anything": 1}


class FailState(TypedDict, total=False):
    prompt: str


def failing_graph() -> Any:
    async def start(state: FailState) -> FailState:
        get_stream_writer()({"step": "start"})
        return {}

    async def explode(state: FailState) -> FailState:
        raise ValueError("boom: the model refused")

    builder = StateGraph(FailState)
    builder.add_node("start", start)
    builder.add_node("explode", explode)
    builder.add_edge(START, "start")
    builder.add_edge("start", "explode")
    builder.add_edge("explode", END)
    return builder.compile()


async def test_graph_that_raises_ends_with_error_then_done(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    queue = JobQueue(setup.redis, setup.settings)
    await queue.submit("fails", {"prompt": "p"})

    with caplog.at_level(logging.ERROR, logger="runstream.worker.runner"):
        result = await JobRunner(failing_graph(), setup.transport, queue).run(
            "fails", {"prompt": "p"}
        )
    events = await read_all(setup, "fails")

    assert [(e.seq, e.type) for e in events] == [
        (1, "custom"),
        (2, "update"),
        (3, "error"),
        (4, "done"),
    ]
    assert events[2].payload == {"type": "ValueError", "message": "boom: the model refused"}
    assert events[3].payload["events"] == 2
    assert events[3].payload["tokens"] == 0
    assert result.error == {"type": "ValueError", "message": "boom: the model refused"}
    status = await queue.status("fails")
    assert status is not None
    assert (status.status, status.events, status.error) == (
        "failed",
        4,
        "ValueError: boom: the model refused",
    )
    assert "job fails: graph raised ValueError" in caplog.text
    assert caplog.records[-1].exc_info is not None


async def test_publish_failure_cancels_the_graph_and_raises(setup: Setup) -> None:
    class BrokenTransport:
        name = "broken"

        def __getattr__(self, name: str) -> Any:
            return getattr(setup.transport, name)

        async def publish_many(self, job_id: str, events: Any) -> list[int]:
            raise ConnectionError("redis went away")

    runner = JobRunner(build_demo_graph(FAST), BrokenTransport())  # type: ignore[arg-type]

    with pytest.raises(ConnectionError, match="redis went away"):
        await runner.run("broken", {"prompt": "p"})
    assert await setup.transport.last_seq("broken") is None


def test_graph_input_prefers_input_over_prompt() -> None:
    assert graph_input({"prompt": "hi"}) == {"prompt": "hi"}
    assert graph_input({"input": {"messages": []}, "prompt": "x"}) == {"messages": []}
    assert graph_input({}) == {"prompt": ""}


def test_json_safe_keeps_plain_values() -> None:
    assert json_safe({"a": [1, 2.5, "x", True, None], 3: (1,)}) == {
        "a": [1, 2.5, "x", True, None],
        "3": [1],
    }
