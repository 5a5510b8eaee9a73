"""The job runner: exact event sequences from a graph's stream, on every backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, HumanMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph, add_messages

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

    def __init__(self, items: list[tuple[str, Any]], raises: BaseException | None = None) -> None:
        self.items = items
        self.raises = raises
        self.calls: list[tuple[Any, Any]] = []
        self.configs: list[Any] = []

    async def astream(
        self, graph_input: Any, stream_mode: Any = None, config: Any = None
    ) -> AsyncIterator[Any]:
        self.calls.append((graph_input, stream_mode))
        self.configs.append(config)
        for item in self.items:
            yield item
        if self.raises is not None:
            raise self.raises


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


_NOT_UTF8 = "which is not valid UTF-8; decode bytes with errors='replace' or drop the character"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"text": "i\ud800j"}, f"payload: holds a lone surrogate (U+D800), {_NOT_UTF8}"),
        ({"key\udcff": 1}, f"payload: holds a lone surrogate (U+DCFF), {_NOT_UTF8}"),
        (
            {"n": 10**5000},
            "payload: not serialisable as JSON (Exceeds the limit (4300 digits) for integer "
            "string conversion; use sys.set_int_max_str_digits() to increase the limit)",
        ),
    ],
)
async def test_output_that_cannot_be_encoded_ends_the_job_at_once(
    setup: Setup, bad: dict[str, Any], message: str
) -> None:
    queue = JobQueue(setup.redis, setup.settings)
    await queue.submit("bad-out", {"prompt": "p"})
    graph = FakeGraph(
        [("custom", {"i": 1}), ("custom", {"i": 2}), ("custom", bad), ("custom", {"i": 3})]
    )

    result = await JobRunner(graph, setup.transport, queue).run("bad-out", {"prompt": "p"})
    events = await read_all(setup, "bad-out")

    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "custom", {"i": 1}),
        (2, "custom", {"i": 2}),
        (3, "error", {"type": "InvalidEvent", "message": message}),
    ]
    assert (events[-1].seq, events[-1].type, events[-1].payload["events"]) == (4, "done", 2)
    assert result.error == {"type": "InvalidEvent", "message": message}
    status = await queue.status("bad-out")
    assert status is not None
    assert (status.status, status.events, status.error) == (
        "failed",
        4,
        f"InvalidEvent: {message}",
    )


async def test_exception_message_with_a_lone_surrogate_still_gives_an_error_event(
    setup: Setup,
) -> None:
    queue = JobQueue(setup.redis, setup.settings)
    await queue.submit("sur", {"prompt": "p"})
    graph = FakeGraph([("custom", {"i": 1})], raises=ValueError("bad \udcff byte"))

    result = await JobRunner(graph, setup.transport, queue).run(
        "sur", {"prompt": "p", "trace_id": "t\ud800"}
    )
    events = await read_all(setup, "sur")

    assert [(e.seq, e.type, dict(e.payload), e.trace_id) for e in events[:-1]] == [
        (1, "custom", {"i": 1}, "t?"),
        (2, "error", {"type": "ValueError", "message": "bad ? byte"}, "t?"),
    ]
    assert (events[-1].seq, events[-1].type) == (3, "done")
    assert result.error == {"type": "ValueError", "message": "bad ? byte"}
    status = await queue.status("sur")
    assert status is not None
    assert (status.status, status.error) == ("failed", "ValueError: bad ? byte")


class ExitState(TypedDict, total=False):
    prompt: str


def exiting_graph(exit_with: BaseException, *, sync: bool) -> Any:
    async def start(state: ExitState) -> ExitState:
        get_stream_writer()({"step": "start"})
        return {}

    async def leave(state: ExitState) -> ExitState:
        raise exit_with

    def leave_sync(state: ExitState) -> ExitState:
        raise exit_with

    builder = StateGraph(ExitState)
    builder.add_node("start", start)
    builder.add_node("leave", leave_sync if sync else leave)
    builder.add_edge(START, "start")
    builder.add_edge("start", "leave")
    builder.add_edge("leave", END)
    return builder.compile()


@pytest.mark.parametrize("sync", [False, True], ids=["async-node", "sync-node"])
@pytest.mark.parametrize(
    ("exit_with", "error"),
    [
        (KeyboardInterrupt("bye"), {"type": "KeyboardInterrupt", "message": "bye"}),
        (SystemExit(3), {"type": "SystemExit", "message": "3"}),
    ],
    ids=["KeyboardInterrupt", "SystemExit"],
)
async def test_graph_node_that_exits_ends_the_job_not_the_process(
    worker_setup: Setup, exit_with: BaseException, error: dict[str, str], sync: bool
) -> None:
    graph = exiting_graph(exit_with, sync=sync)

    result = await JobRunner(graph, worker_setup.transport).run("exits", {"prompt": "p"})
    events = await read_all(worker_setup, "exits")

    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "custom", {"step": "start"}),
        (2, "update", {"start": None}),
        (3, "error", error),
    ]
    assert (events[-1].seq, events[-1].type) == (4, "done")
    assert result.error == error
    # The event loop is still running: the test goes on.
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("exit_with", "error"),
    [
        (KeyboardInterrupt(), {"type": "KeyboardInterrupt", "message": ""}),
        (SystemExit("stop"), {"type": "SystemExit", "message": "stop"}),
    ],
)
async def test_astream_that_exits_ends_the_job(
    worker_setup: Setup, exit_with: BaseException, error: dict[str, str]
) -> None:
    graph = FakeGraph([("custom", {"i": 1})], raises=exit_with)

    result = await JobRunner(graph, worker_setup.transport).run("exits2", {"prompt": "p"})
    events = await read_all(worker_setup, "exits2")

    assert [(e.seq, e.type, dict(e.payload)) for e in events] == [
        (1, "custom", {"i": 1}),
        (2, "error", error),
        (3, "done", {**events[-1].payload, "events": 1, "tokens": 0}),
    ]
    assert result.error == error


async def test_cancelling_a_job_is_not_turned_into_an_error(worker_setup: Setup) -> None:
    started = asyncio.Event()

    class Slow:
        async def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            yield ("custom", {"i": 1})
            started.set()
            await asyncio.sleep(30)
            yield ("custom", {"i": 2})

    task = asyncio.create_task(JobRunner(Slow(), worker_setup.transport).run("cx", {}))
    await started.wait()
    for _ in range(500):  # until the first event is stored: the publisher then waits
        if await worker_setup.transport.last_seq("cx") == 1:
            break
        await asyncio.sleep(0.01)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert await worker_setup.transport.last_seq("cx") == 1


async def test_job_longer_than_its_timeout_ends_with_a_timeout_error(worker_setup: Setup) -> None:
    queue = JobQueue(worker_setup.redis, worker_setup.settings)
    await queue.submit("slow", {"prompt": "p"})

    class Hangs:
        async def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            yield ("custom", {"i": 1})
            await asyncio.sleep(30)
            yield ("custom", {"i": 2})

    runner = JobRunner(Hangs(), worker_setup.transport, queue, job_timeout=0.3)
    result = await runner.run("slow", {"prompt": "p"})
    events = await read_all(worker_setup, "slow")

    error = {
        "reason": "timeout",
        "type": "TimeoutError",
        "message": "the job ran longer than RUNSTREAM_JOB_TIMEOUT (0.3 s)",
    }
    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "custom", {"i": 1}),
        (2, "error", error),
    ]
    assert (events[-1].seq, events[-1].type) == (3, "done")
    assert result.error == error
    status = await queue.status("slow")
    assert status is not None
    assert (status.status, status.error) == (
        "failed",
        "TimeoutError: the job ran longer than RUNSTREAM_JOB_TIMEOUT (0.3 s)",
    )


async def test_timeout_error_raised_by_the_graph_is_not_the_job_timeout(
    worker_setup: Setup,
) -> None:
    graph = FakeGraph([], raises=TimeoutError("the model timed out"))

    runner = JobRunner(graph, worker_setup.transport, job_timeout=60)
    result = await runner.run("own-timeout", {"prompt": "p"})

    assert result.error == {"type": "TimeoutError", "message": "the model timed out"}


class ChatState(TypedDict, total=False):
    prompt: str
    count: int


def checkpointed_graph() -> Any:
    from langgraph.checkpoint.memory import InMemorySaver

    async def count(state: ChatState) -> ChatState:
        return {"count": state.get("count", 0) + 1}

    builder = StateGraph(ChatState)
    builder.add_node("count", count)
    builder.add_edge(START, "count")
    builder.add_edge("count", END)
    return builder.compile(checkpointer=InMemorySaver())


async def test_graph_with_a_checkpointer_runs_with_the_job_id_as_thread(
    worker_setup: Setup,
) -> None:
    graph = checkpointed_graph()
    runner = JobRunner(graph, worker_setup.transport)

    first = await runner.run("thread-a", {"prompt": "p"})
    other = await runner.run("thread-b", {"prompt": "p"})
    events = await read_all(worker_setup, "thread-a")

    assert (first.error, other.error) == (None, None)
    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "update", {"count": {"count": 1}}),
    ]
    state = await graph.aget_state({"configurable": {"thread_id": "thread-a"}})
    assert state.values == {"prompt": "p", "count": 1}


async def test_graph_gets_the_job_id_as_thread_id(worker_setup: Setup) -> None:
    graph = FakeGraph([])

    await JobRunner(graph, worker_setup.transport).run("job-7", {"prompt": "p"})

    assert graph.configs == [{"configurable": {"thread_id": "job-7"}}]


class RewrapState(TypedDict, total=False):
    prompt: str
    messages: Annotated[list[AnyMessage], add_messages]


def rewrapping_graph(returned: str | None = None) -> Any:
    """A node that streams a model, then returns a new AIMessage (a new id) of the text."""

    async def talk(state: RewrapState) -> RewrapState:
        model = GenericFakeChatModel(messages=iter([AIMessage(content="alpha beta gamma")]))
        text = ""
        async for chunk in model.astream("q"):
            text += chunk.text
        return {"messages": [AIMessage(content=returned or text, id="whole")]}

    builder = StateGraph(RewrapState)
    builder.add_node("talk", talk)
    builder.add_edge(START, "talk")
    builder.add_edge("talk", END)
    return builder.compile()


async def test_node_returning_its_streamed_text_as_a_new_message_is_not_relayed_twice(
    worker_setup: Setup,
) -> None:
    result = await JobRunner(rewrapping_graph(), worker_setup.transport).run("rw", {"prompt": "p"})
    events = await read_all(worker_setup, "rw")

    message_id = events[0].payload["message_id"]
    assert message_id != "whole"
    assert [(e.seq, e.type, dict(e.payload)) for e in events[:-1]] == [
        (1, "token", {"text": "alpha", "node": "talk", "message_id": message_id}),
        (2, "token", {"text": " ", "node": "talk", "message_id": message_id}),
        (3, "token", {"text": "beta", "node": "talk", "message_id": message_id}),
        (4, "token", {"text": " ", "node": "talk", "message_id": message_id}),
        (5, "token", {"text": "gamma", "node": "talk", "message_id": message_id}),
        (
            6,
            "update",
            {"talk": {"messages": [{"type": "ai", "content": "alpha beta gamma", "id": "whole"}]}},
        ),
    ]
    assert (events[-1].seq, events[-1].type) == (7, "done")
    assert (result.events, result.tokens) == (6, 5)


async def test_whole_message_with_other_text_than_the_streamed_one_is_relayed(
    setup: Setup,
) -> None:
    step1 = {"langgraph_node": "talk", "langgraph_step": 1}
    step2 = {"langgraph_node": "talk", "langgraph_step": 2}
    graph = FakeGraph(
        [
            ("messages", (AIMessageChunk(content="Hi", id="c1"), step1)),
            ("messages", (AIMessageChunk(content=" there", id="c1"), step1)),
            ("messages", (AIMessageChunk(content="!", id="c2"), step1)),
            ("messages", (AIMessage(content="Hi there!", id="w1"), step1)),
            ("messages", (AIMessage(content="Hi there", id="w2"), step1)),
            ("messages", (AIMessage(content="Hi", id="w3"), step1)),
            ("messages", (AIMessage(content="Hi there", id="w4"), step2)),
            ("messages", (AIMessage(content="Hi there", id="w5"), meta("other"))),
        ]
    )

    await JobRunner(graph, setup.transport).run("keep", {"prompt": "p"})
    events = await read_all(setup, "keep")

    assert [(e.type, e.payload["text"], e.payload["message_id"]) for e in events[:-1]] == [
        ("token", "Hi", "c1"),
        ("token", " there", "c1"),
        ("token", "!", "c2"),
        ("message", "Hi", "w3"),
        ("message", "Hi there", "w4"),
        ("message", "Hi there", "w5"),
    ]


async def test_running_job_status_counts_the_tokens_published_so_far(
    worker_setup: Setup,
) -> None:
    queue = JobQueue(worker_setup.redis, worker_setup.settings)
    await queue.submit("live", {"prompt": "p"})
    release = asyncio.Event()

    class Pauses:
        async def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            for word in ("one", " two", " three"):
                yield ("messages", (AIMessageChunk(content=word, id="m"), meta("talk")))
            yield ("custom", {"paused": True})
            await release.wait()

    runner = JobRunner(Pauses(), worker_setup.transport, queue)
    runner.tokens_record_seconds = 0
    task = asyncio.create_task(runner.run("live", {"prompt": "p"}))
    for _ in range(500):
        status = await queue.status("live")
        if status is not None and status.events == 4 and status.tokens == 3:
            break
        await asyncio.sleep(0.01)
    release.set()
    result = await task

    assert status is not None
    assert (status.status, status.events, status.tokens) == ("running", 4, 3)
    assert result.tokens == 3
